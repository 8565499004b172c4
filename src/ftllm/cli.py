"""Small pieces every stage script shares: logging set-up and one-line errors."""
from __future__ import annotations

import contextlib
import logging

import click

from ftllm.config import ConfigError
from ftllm.io import InputError


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


@contextlib.contextmanager
def one_line_errors():
    """Turn bad input and bad params into one clear line and a non-zero exit (no traceback)."""
    try:
        yield
    except (InputError, ConfigError) as err:
        raise click.ClickException(str(err)) from None


def relaunched(stage: str, config, argv: list, model_dir=None) -> bool:
    """Hand a training stage to `accelerate launch` workers when its params want several processes.

    Returns True when the workers ran (and succeeded): the caller then has nothing left to do.
    Returns False when this process should train itself (one process, or already a worker).
    `model_dir` (the checkpoint being trained) sizes the `fsdp.cpu_offload_threshold` decision.
    """
    from ftllm.train.launch import relaunch_if_needed

    try:
        code = relaunch_if_needed(config.num_processes, config.accelerate_config, [str(a) for a in argv],
                                  fsdp=getattr(config, "fsdp", None), model_dir=model_dir)  # fmt: skip
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    if code:
        raise click.ClickException(f"{stage} workers failed with exit code {code}")
    return code is not None
