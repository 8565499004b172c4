"""Stage `upscale`: grows the tiny model end to end; bad params and missing input are one clear line."""
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.stages.helpers import load_stage_main

main = load_stage_main("upscale")


def _params(tmp_path, **section):
    path = tmp_path / "params.yaml"
    values = {"target_layers": 6, "dtype": "float32", "device": "cpu", **section}
    path.write_text(yaml.safe_dump({"upscale": values, "sft": {"bogus": 1}}), encoding="utf-8")
    return path


@pytest.mark.slow
def test_grows_the_tiny_model(tmp_path, tiny_model):
    out, metrics = tmp_path / "models" / "upscaled", tmp_path / "metrics" / "upscale.json"
    args = ["--params", str(_params(tmp_path)), "--model", str(tiny_model), "--out", str(out),
            "--metrics", str(metrics)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "4 -> 6 layers" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 6
    assert json.loads((out / "upscale.json").read_text())["new_layers"] == [2, 4]
    values = json.loads(metrics.read_text())
    assert values["num_new_layers"] == 2 and values["fusion"] == "ot" and values["seconds"] > 0
    assert not Path(str(out) + ".tmp").exists()


@pytest.mark.slow
def test_impossible_target_is_one_clear_line(tmp_path, tiny_model):
    args = ["--params", str(_params(tmp_path, target_layers=9)), "--model", str(tiny_model), "--out",
            str(tmp_path / "o"), "--metrics", str(tmp_path / "m.json")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "upscale.target_layers" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_bad_params_and_missing_model(tmp_path):
    out = ["--out", str(tmp_path / "o"), "--metrics", str(tmp_path / "m.json")]
    result = CliRunner().invoke(main, ["--params", str(_params(tmp_path, fusoin="ot")), "--model", str(tmp_path)] + out)
    assert result.exit_code != 0 and "upscale.fusoin" in result.output
    result = CliRunner().invoke(main, ["--params", str(_params(tmp_path)), "--model", str(tmp_path / "nope")] + out)
    assert result.exit_code != 0 and "nope: not found" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_help_names_the_section():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "`upscale`" in result.output
