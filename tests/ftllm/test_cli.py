"""The stage harness: argv rebuilt from Click's parsed parameters, resolved config, one-line errors, thin scripts."""
import ast
import json
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from ftllm.cli import command_argv, run_stage
from tests.stages.helpers import STAGES, load_stage_main

# Each stage with a command line that sets every option (multiple options twice, flags both ways).
COMMAND_LINES = {
    "base": ["--params", "p.yaml", "--section", "teacher", "--out", "o"],
    "evalset": ["--params", "p.yaml", "--out", "o.jsonl"],
    "generate": ["--params", "p.yaml", "--out", "o", "--metrics", "m.json", "--shard", "1/4"],
    "judge": ["--raw", "r", "--eval", "a.jsonl", "--eval", "b.jsonl", "--out", "o", "--shard", "0/2"],
    "cpt": ["--model", "m", "--out", "o", "--corpus", "a", "--corpus", "b dir", "--checkpoints", "c",
            "--metrics", "m.json", "--plot", "p.json"],
    "upscale": ["--model", "m", "--out", "o", "--metrics", "m.json"],
    "sft": ["--params", "p.yaml", "--model", "m", "--data", "d", "--out", "o", "--checkpoints", "c",
            "--metrics", "m.json", "--loss-log", "l.json"],
    "rl": ["--model", "m", "--data", "d", "--out", "o", "--plots-dir", "pl"],
    "predict": ["--model", "hub/id", "--input", "i.jsonl", "--out", "o"],
    "evaluate": ["--predictions", "p", "--gold", "g.jsonl", "--metrics", "m.json", "--plot", "pl.json"],
}


@pytest.mark.parametrize("stage", sorted(COMMAND_LINES))
def test_rebuilt_argv_parses_to_the_same_parameters(stage):
    command = load_stage_main(stage)
    ctx = command.make_context(stage, list(COMMAND_LINES[stage]))
    again = command.make_context(stage, command_argv(ctx))
    assert again.params == ctx.params


def test_rebuilt_argv_keeps_flags_and_refuses_converted_values():
    @click.command()
    @click.option("--fast/--slow", default=True)
    @click.option("--verbose", is_flag=True)
    @click.option("--n", type=int, default=3)
    @click.option("--pair", type=(int, str), default=None)
    def cmd(**_):
        pass

    ctx = cmd.make_context("cmd", ["--slow", "--verbose", "--n", "5", "--pair", "1", "x"])
    assert command_argv(ctx) == ["--slow", "--verbose", "--n", "5", "--pair", "1", "x"]

    @click.command()
    @click.option("--ks", default="1,2", callback=lambda c, p, v: [int(k) for k in v.split(",")])
    def converted(**_):
        pass

    with pytest.raises(TypeError, match="--ks"):
        command_argv(converted.make_context("converted", []))


@pytest.mark.parametrize("script", sorted(STAGES.glob("*.py")), ids=lambda p: p.stem)
def test_stage_scripts_are_options_plus_one_harness_call(script):
    source = script.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 40
    calls = [node for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "run_stage"]
    assert len(calls) == 1
    assert "argv" not in source and "sys." not in source


def write_problems(config, out, needs=None):
    from ftllm.evalset import write_evalset

    return write_evalset(config, out)


def _evalset_command():
    @click.command()
    @click.option("--params", type=click.Path(path_type=Path), default="params.yaml")
    @click.option("--out", type=click.Path(path_type=Path), required=True)
    @click.option("--metrics", type=click.Path(path_type=Path), default=None)
    @click.option("--needs", type=click.Path(path_type=Path), default=None)
    def cmd(**_):
        run_stage("evalset", "tests.ftllm.test_cli:write_problems", inputs=("needs",), metrics="metrics",
                  summary="{problems} problems")

    return cmd


def test_writes_metrics_and_the_resolved_config_beside_them(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"evalset": {"per_template": 1, "templates": ["arithmetic", "dice"]}}))
    metrics = tmp_path / "m" / "evalset.json"
    args = ["--params", str(params), "--out", str(tmp_path / "e.jsonl"), "--metrics", str(metrics)]
    result = CliRunner().invoke(_evalset_command(), args)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "2 problems"
    assert json.loads(metrics.read_text()) == {"problems": 2}
    resolved = json.loads((tmp_path / "m" / "evalset.config.json").read_text())
    assert resolved["section"] == "evalset"
    # defaults the params file left out are written too: that is what "resolved" means
    assert resolved["config"]["per_template"] == 1 and resolved["config"]["seed"] == 2026
    assert resolved["options"]["out"] == str(tmp_path / "e.jsonl")


@pytest.mark.parametrize("section, extra, message", [
    ({"per_templat": 1}, [], "evalset.per_templat"),
    ({"per_template": 1}, ["--needs", "nope.txt"], "nope.txt: not found"),
])
def test_bad_params_or_missing_input_is_one_line(tmp_path, section, extra, message):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"evalset": section}))
    args = ["--params", str(params), "--out", str(tmp_path / "e.jsonl"), *extra]
    result = CliRunner().invoke(_evalset_command(), args)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [result.output.strip()] and message in result.output
    assert not (tmp_path / "e.jsonl").exists()


def test_sigusr1_prints_the_stacks_and_the_stage_goes_on():
    import os
    import signal
    import subprocess
    import sys
    import time

    code = ("from ftllm.cli import setup_logging; setup_logging(); import time\n"
            "print('ready', flush=True)\n"
            "for _ in range(300): time.sleep(0.1)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(1.0)
        assert proc.poll() is None  # still running
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert "most recent call first" in err and "<string>" in err
