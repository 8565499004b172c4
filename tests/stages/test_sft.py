"""Stage `sft`: one process and two CPU processes on the tiny model give the same run; bad input fails in one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ftllm.io import write_jsonl, write_parquet
from tests.stages.helpers import load_stage_main

main = load_stage_main("sft")
ROOT = Path(__file__).resolve().parents[2]

SECTION = {
    "eos_token": "<|im_end|>", "dtype": "float32", "bf16": False, "max_length": 256, "global_batch_size": 4,
    "per_device_batch_size": 2, "max_steps": 3, "save_steps": 1, "num_processes": 1, "learning_rate": 1e-3,
    "gradient_checkpointing": False, "attn_implementation": "sdpa",
    "accelerate_config": str(ROOT / "conf" / "accelerate" / "cpu.yaml"),
}  # fmt: skip


def rows(n: int = 8) -> list[dict]:
    return [
        {"id": f"q{i}", "field": "algebra", "difficulty": "easy", "problem": f"{i} + {i} を計算しなさい。",
         "reasoning": f"{i} と {i} を足す。", "solution": f"{i} + {i} = {2 * i}", "answer": str(2 * i)}
        for i in range(n)
    ]  # fmt: skip


def run(tmp_path: Path, model, section: dict, data: Path | None = None):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"sft": section}), encoding="utf-8")
    if data is None:
        data = tmp_path / "kept.parquet"
        write_parquet(data, rows())
    args = ["--params", params, "--model", model, "--data", data, "--out", tmp_path / "sft",
            "--checkpoints", tmp_path / "ck", "--metrics", tmp_path / "m.json", "--loss-log", tmp_path / "loss.json"]
    return CliRunner().invoke(main, [str(a) for a in args])  # fmt: skip


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_model):
    tmp_path = tmp_path_factory.mktemp("sft1")
    result = run(tmp_path, tiny_model, SECTION)
    assert result.exit_code == 0, result.output
    return tmp_path


def test_help_names_the_section():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "section `sft`" in " ".join(result.output.split())


@pytest.mark.slow
def test_trains_and_writes_outputs(single):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    metrics = json.loads((single / "m.json").read_text())
    assert metrics["steps"] == 3 and metrics["rows"] == 8 and metrics["tokens"] > 0
    assert metrics["gradient_accumulation_steps"] == 2 and metrics["processes"] == 1
    losses = json.loads((single / "loss.json").read_text())
    assert [r["step"] for r in losses] == [1, 2, 3] and losses[-1]["loss"] == metrics["final_loss"]
    tokenizer = AutoTokenizer.from_pretrained(single / "sft")
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert GenerationConfig.from_pretrained(single / "sft").eos_token_id == eos_id
    assert AutoConfig.from_pretrained(single / "sft").use_cache is True
    assert not (single / "sft.tmp").exists()


@pytest.mark.slow
def test_two_cpu_processes_match_one(tmp_path, tiny_model, single):
    """Two gloo workers with half the accumulation see the same batches as one process: same losses."""
    result = run(tmp_path, tiny_model, {**SECTION, "num_processes": 2})
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    reference = json.loads((single / "m.json").read_text())
    assert metrics["processes"] == 2 and metrics["gradient_accumulation_steps"] == 1
    assert metrics["tokens"] == reference["tokens"]
    assert metrics["final_loss"] == pytest.approx(reference["final_loss"], rel=1e-4)
    assert (tmp_path / "sft" / "model.safetensors").exists()


def test_missing_data_is_one_line(tmp_path, tiny_model):
    result = run(tmp_path, tiny_model, SECTION, data=tmp_path / "nope.parquet")
    assert result.exit_code != 0 and "nope.parquet" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unknown_key_is_named(tmp_path, tiny_model):
    result = run(tmp_path, tiny_model, {**SECTION, "lr": 1e-4})
    assert result.exit_code != 0 and "sft.lr" in result.output


def test_missing_field_is_named(tmp_path, tiny_model):
    data = tmp_path / "kept.jsonl"
    write_jsonl(data, [{"id": "q1", "problem": "1+1", "reasoning": "…", "answer": "2"}])
    result = run(tmp_path, tiny_model, SECTION, data=data)
    assert result.exit_code != 0 and "solution" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_indivisible_global_batch_is_explained(tmp_path, tiny_model):
    result = run(tmp_path, tiny_model, {**SECTION, "global_batch_size": 5})
    assert result.exit_code != 0 and "global_batch_size 5" in result.output
