"""The one stage harness: every `stages/<stage>.py` is its Click options plus one `run_stage` call.

    @click.command(help=__doc__)
    @click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True)
    ...
    def main(**options):
        run_stage("sft", "ftllm.train.sft:train_sft", inputs=("model_dir",), relaunch=True,
                  summary="sft: {steps} steps, model in {out_dir}")

`run_stage` reads the running command's own parsed parameters (`click.get_current_context()`), so a
stage never lists its options twice. It sets one log format, loads the params section into its typed
config, checks the declared inputs exist, relaunches under `accelerate launch` when the section asks
for several processes (argv rebuilt from those same parameters), calls the library function with the
config and the options as keywords (an option's Click name is the function's argument name), writes
its returned metrics and the resolved config beside them, and prints one summary line. Bad input or
params end as one `Error: <file or key>: <what>` line and exit code 1, never a traceback.
"""
from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import inspect
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from ftllm.config import ConfigError, load_attr
from ftllm.io import InputError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, datefmt="%H:%M:%S")
    # `kill -USR1 <pid>` prints every thread's stack and lets the stage go on: how a stuck stage says where it is
    # (to the process's real stderr: under a test runner sys.stderr may be a buffer without a file descriptor)
    if hasattr(signal, "SIGUSR1") and sys.__stderr__ is not None:
        with contextlib.suppress(ValueError, OSError):
            faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)


@contextlib.contextmanager
def one_line_errors(extra: tuple[type[BaseException], ...] = ()):
    """Turn bad input and bad params into one clear line and a non-zero exit (no traceback)."""
    try:
        yield
    except (InputError, ConfigError, *extra) as err:
        raise click.ClickException(str(err)) from None


def _text(param: click.Parameter, value: Any) -> str:
    option = param.opts[0] if param.opts else param.name
    if hasattr(param.type, "to_text"):  # a type that converts text to a value knows its inverse
        return param.type.to_text(value)
    if isinstance(value, bool) or not isinstance(value, (str, Path, int, float)):
        # a callback turned the text into something else; its inverse is unknown, so refuse loudly
        raise TypeError(f"{option}: cannot pass a {type(value).__name__} value to relaunched workers")
    return str(value)


def command_argv(ctx: click.Context) -> list[str]:
    """The command line that makes `ctx.command` parse to `ctx.params` again (for relaunched workers)."""
    argv: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None:
            continue
        if isinstance(param, click.Argument):
            argv += [_text(param, v) for v in (value if param.multiple or param.nargs != 1 else [value])]
            continue
        flag = param.opts[0]
        if param.is_flag:
            if value and not param.secondary_opts:
                argv.append(flag)
            elif param.secondary_opts:
                argv.append(flag if value else param.secondary_opts[0])
        elif param.multiple:
            for item in value:
                argv += [flag, *([_text(param, v) for v in item] if param.nargs != 1 else [_text(param, item)])]
        elif param.nargs != 1:
            argv += [flag, *(_text(param, v) for v in value)]
        else:
            argv += [flag, _text(param, value)]
    return argv


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def resolved_config_path(metrics: Path) -> Path:
    """Where a stage's resolved settings go: `metrics/sft.json` -> `metrics/sft.config.json`."""
    return metrics.with_name(f"{metrics.stem}.config.json")


def run_stage(
    section: str | None,
    call: str,
    *,
    inputs: tuple[str, ...] = (),
    relaunch: bool = False,
    metrics: str | None = None,
    writes_metrics: bool = False,
    summary: str | None = None,
    errors: tuple[type[BaseException], ...] = (),
) -> None:
    """Run the current Click command as a pipeline stage (see the module docstring).

    section: params section to load (None: the stage reads no params); the option `params` names the file,
        an option named `section` (if any) only chooses the section and is not passed on.
    call: "module:function" called as `function(config, **options)` (without `params`, and without the
        metrics option unless `writes_metrics`), or
        `function(**options)` when section is None.
    inputs: option names whose paths must exist before any work starts.
    relaunch: the section has `num_processes`/`accelerate_config`; run under accelerate when it asks.
    metrics: option name of the metrics path; the resolved config is written beside it.
    writes_metrics: the function writes that file itself; otherwise the harness writes its returned dict there.
    summary: `str.format` template over the options and the returned dict, echoed on success.
    errors: further exception types the library raises for bad params or data (shown as one line).
    """
    ctx = click.get_current_context()
    options = dict(ctx.params)
    params_path = options.pop("params", None)
    options.pop("section", None)  # chooses the params section (stage `base`); not the function's business
    setup_logging()
    with one_line_errors():
        config = None
        if section is not None:
            from ftllm.config import load_stage

            config = load_stage(params_path if params_path is not None else "params.yaml", section)
        for name in inputs:
            if options.get(name) is not None and not Path(options[name]).exists():
                raise InputError(f"{options[name]}: not found")
    if relaunch and _relaunched(section, config, ctx):
        return
    main = int(os.environ.get("RANK", "0")) == 0  # relaunched workers: only rank 0 writes and reports
    kwargs = {k: v for k, v in options.items() if writes_metrics or k != metrics}
    with one_line_errors(errors):
        function = load_attr(call)
        try:
            result = function(**kwargs) if config is None else function(config, **kwargs)
        finally:
            if relaunch:
                from ftllm.train.launch import leave_process_group

                leave_process_group()
    if main and metrics is not None and options.get(metrics) is not None:
        from ftllm.io import write_json

        if not writes_metrics:
            write_json(options[metrics], result)
        if config is not None:
            write_json(resolved_config_path(Path(options[metrics])),
                       {"section": section, "config": _jsonable(config), "options": _jsonable(options)})
    if main:
        if isinstance(result, str):
            click.echo(result)
        elif summary is not None:
            click.echo(summary.format(**{**options, **(result or {})}))


def _relaunched(section: str, config, ctx: click.Context) -> bool:
    """True when `accelerate launch` workers ran this stage (and succeeded); False: train here."""
    from ftllm.train.launch import relaunch_if_needed

    script = inspect.getsourcefile(ctx.command.callback)
    try:
        # the checkpoint being trained (option `model`) sizes the `fsdp.cpu_offload_threshold` decision
        code = relaunch_if_needed(config.num_processes, config.accelerate_config, [script, *command_argv(ctx)],
                                  fsdp=getattr(config, "fsdp", None), model_dir=ctx.params.get("model"))
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    if code:
        raise click.ClickException(f"{section} workers failed with exit code {code}")
    return code is not None



class ShardType(click.ParamType):
    """`--shard i/n`: worker i of n (0 <= i < n), as the tuple (i, n)."""

    name = "i/n"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            index, count = (int(part) for part in str(value).split("/"))
        except ValueError:
            self.fail(f"{value}: expected i/n, e.g. 0/4", param, ctx)
        if count < 1 or not 0 <= index < count:
            self.fail(f"{value}: need 0 <= i < n", param, ctx)
        return index, count

    def to_text(self, value: tuple[int, int]) -> str:
        return f"{value[0]}/{value[1]}"


SHARD = ShardType()


def params_option(section: str):
    """The `--params` option every stage has: the params file whose `section` it reads."""
    return click.option("--params", type=click.Path(path_type=Path), default="params.yaml", show_default=True,
                        help=f"params file; this stage reads section `{section}`")
