"""Training stages log every step through DVCLive into the folder dvc.yaml declares (`--live`)."""
import csv
import json

import pytest
import yaml
from click.testing import CliRunner

from ftllm.io import write_parquet
from tests.stages.test_sft import SECTION, main, rows


@pytest.mark.slow
def test_sft_logs_loss_and_learning_rate_through_dvclive(tmp_path, tiny_model):
    pytest.importorskip("dvclive")

    params = tmp_path / "params.yaml"
    section = {**SECTION, "report_to": ["dvclive"], "save_steps": 10}
    params.write_text(yaml.safe_dump({"sft": section}), encoding="utf-8")
    data = tmp_path / "kept.parquet"
    write_parquet(data, rows())
    live = tmp_path / "live"
    args = ["--params", params, "--model", tiny_model, "--data", data, "--out", tmp_path / "sft", "--checkpoints",
            tmp_path / "ck", "--metrics", tmp_path / "m.json", "--loss-log", tmp_path / "loss.json", "--live", live]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    with (live / "plots" / "metrics" / "loss.tsv").open() as f:
        losses = list(csv.DictReader(f, delimiter="\t"))
    assert [int(r["step"]) for r in losses] == [0, 1, 2] and all(float(r["loss"]) > 0 for r in losses)
    with (live / "plots" / "metrics" / "learning_rate.tsv").open() as f:
        assert len(list(csv.DictReader(f, delimiter="\t"))) == 3
    summary = json.loads((live / "metrics.json").read_text())
    assert summary["loss"] == pytest.approx(float(losses[-1]["loss"])) and summary["step"] == 3
    assert yaml.safe_load((live / "params.yaml").read_text())["learning_rate"] == SECTION["learning_rate"]


def test_report_to_is_checked():
    from ftllm.config import ConfigError, build
    from ftllm.train.sft import SFTConfig

    assert build(SFTConfig, {"report_to": ["dvclive", "trackio"]}).report_to == ("dvclive", "trackio")
    with pytest.raises(ConfigError, match="report_to: unknown logger"):
        build(SFTConfig, {"report_to": ["dvclive", "tensorbored"]}, "sft")
