"""stages/rl.py end to end through Click on the tiny model, plus its one-line errors."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ftllm.io import write_records

STAGE = Path(__file__).resolve().parents[2] / "stages" / "rl.py"

TEST_PROFILE = {
    "rewards": {"accuracy": 1.0, "single_box": 0.1},
    "loss_type": "dapo",
    "num_generations": 4,
    "max_completion_length": 8,
    "prompts_per_step": 1,
    "per_device_batch_size": 4,
    "max_steps": 2,
    "save_steps": 1,
    "learning_rate": 1.0e-4,
    "dtype": "float32",
    "bf16": False,
    "gradient_checkpointing": False,
    "num_processes": 1,
}


def load_stage():
    spec = importlib.util.spec_from_file_location("rl_stage", STAGE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def workdir(tmp_path):
    write_records(tmp_path / "kept.parquet",
                  [{"id": str(i), "problem": f"{i}+1", "answer": str(i + 1)} for i in range(3)])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"rl": TEST_PROFILE}))
    return tmp_path


def invoke(workdir, model, data="kept.parquet", params="params.yaml"):
    args = ["--params", workdir / params, "--model", model, "--data", workdir / data, "--out", workdir / "models/rl",
            "--checkpoints", workdir / "ckpt", "--metrics", workdir / "metrics/rl.json",
            "--plots-dir", workdir / "plots/rl"]  # fmt: skip
    return CliRunner().invoke(load_stage(), [str(a) for a in args])


def test_help_names_the_params_section():
    result = CliRunner().invoke(load_stage(), ["--help"])
    assert result.exit_code == 0 and "section `rl`" in result.output


@pytest.mark.slow
def test_stage_trains_and_writes_outputs(workdir, tiny_model):
    result = invoke(workdir, tiny_model)
    assert result.exit_code == 0, result.output
    assert (workdir / "models/rl/model.safetensors").exists() and (workdir / "models/rl/tokenizer.json").exists()
    metrics = json.loads((workdir / "metrics/rl.json").read_text())
    assert metrics["steps"] == 2 and metrics["prompts"] == 3 and metrics["reward_mean"] == 0.0
    assert all(isinstance(v, (int, float, str, type(None))) for v in metrics.values())  # flat for dvc metrics
    assert len(json.loads((workdir / "plots/rl/steps.json").read_text())) == 2
    assert len(json.loads((workdir / "plots/rl/groups.json").read_text())) == 8


def test_missing_data_is_one_line_error(workdir, tiny_model):
    result = invoke(workdir, tiny_model, data="nope.parquet")
    assert result.exit_code != 0 and "nope.parquet: not found" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_rows_without_answer_field_fail_clearly(workdir, tiny_model):
    write_records(workdir / "bad.jsonl", [{"id": "1", "problem": "1+1"}])
    result = invoke(workdir, tiny_model, data="bad.jsonl")
    assert result.exit_code != 0 and "bad.jsonl:1: missing required field(s) answer" in result.output


def test_unknown_params_key_names_it(workdir, tiny_model):
    (workdir / "typo.yaml").write_text(yaml.safe_dump({"rl": {**TEST_PROFILE, "los_type": "dapo"}}))
    result = invoke(workdir, tiny_model, params="typo.yaml")
    assert result.exit_code != 0 and "rl.los_type" in result.output
