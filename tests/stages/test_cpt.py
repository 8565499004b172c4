"""Stage `cpt`: DoRA + ABF on the tiny model from local corpus files; bad input is one clear line."""
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.stages.helpers import load_stage_main

main = load_stage_main("cpt")
CORPUS = Path(__file__).resolve().parents[2] / "assets" / "corpus"


def _params(tmp_path, **section):
    path = tmp_path / "params.yaml"
    values = {
        "corpus": [str(CORPUS)], "context_length": 4096, "rope_theta": 40000.0, "block_size": 64,
        "lora_r": 4, "lora_alpha": 8.0, "max_steps": 3, "per_device_batch_size": 2, "gradient_accumulation_steps": 1,
        "bf16": False, "dtype": "float32", "save_steps": 2, "num_processes": 1, "attn_implementation": "sdpa",
        **section,
    }  # fmt: skip
    path.write_text(yaml.safe_dump({"cpt": values}), encoding="utf-8")
    return path


def _args(tmp_path, params, model, *extra):
    return ["--params", str(params), "--model", str(model), "--out", str(tmp_path / "cpt"),
            "--checkpoints", str(tmp_path / "ck"), "--metrics", str(tmp_path / "metrics.json"),
            "--plot", str(tmp_path / "loss.json"), *extra]


@pytest.mark.slow
def test_trains_and_writes_model_metrics_and_plot(tmp_path, tiny_model):
    # --corpus replaces the params corpus: only the JSONL notes are read
    args = _args(tmp_path, _params(tmp_path, corpus=["/nonexistent"]), tiny_model,
                 "--corpus", str(CORPUS / "notes.jsonl"))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "cpt: 3 steps" in result.output and "context 4096" in result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["tokens_seen"] == 3 * 2 * 64
    assert metrics["first_loss"] is not None and metrics["rope_theta"] == 40000.0
    assert len(json.loads((tmp_path / "loss.json").read_text())) == 3
    config = json.loads((tmp_path / "cpt" / "config.json").read_text())
    assert config["max_position_embeddings"] == 4096
    assert (tmp_path / "ck" / "checkpoint-2").is_dir()


def test_malformed_corpus_is_one_clear_line(tmp_path, tiny_model):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n', encoding="utf-8")
    result = CliRunner().invoke(main, _args(tmp_path, _params(tmp_path), tiny_model, "--corpus", str(bad)))
    assert result.exit_code != 0
    assert "bad.jsonl:2: malformed JSON" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "cpt").exists()


def test_bad_params_key_is_named(tmp_path):
    result = CliRunner().invoke(main, _args(tmp_path, _params(tmp_path, lora_rank=8), tmp_path))
    assert result.exit_code != 0 and "cpt.lora_rank" in result.output


def test_help_names_the_section():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "`cpt`" in result.output
