"""Stages `evaluate` and `report`: metrics and plot files from a predictions folder; bad input."""
import json

import pytest
import yaml
from click.testing import CliRunner

from ftllm.io import write_jsonl, write_parquet
from tests.stages.helpers import load_stage_main

evaluate_main = load_stage_main("evaluate")
report_main = load_stage_main("report")

GOLD = [
    {"id": "a", "problem": "p", "category": "中1", "unit": "u", "solution": "3"},
    {"id": "b", "problem": "p", "category": "IA", "unit": "u", "solution": "\\frac{1}{2}"},
]


def _setup(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"evaluate": {"ks": [1, 2, 3], "workers": 1}}), encoding="utf-8")
    pred = tmp_path / "predictions" / "m"
    pred.mkdir(parents=True)
    write_jsonl(pred / "predictions.jsonl", [{**GOLD[0], "output": "\\boxed{3}"}, {**GOLD[1], "output": "\\boxed{2}"}])
    samples = [
        {"id": "a", "sample": 0, "answer": "$3$", "class_index": 0, "logprob": -1.0},
        {"id": "a", "sample": 1, "answer": "$3$", "class_index": 0, "logprob": -1.0},
        {"id": "b", "sample": 0, "answer": "$0.5$", "class_index": 1, "logprob": -1.0},
        {"id": "b", "sample": 1, "answer": "$2$", "class_index": 0, "logprob": -1.0},
    ]
    write_parquet(pred / "samples.parquet", samples)
    write_jsonl(tmp_path / "gold.jsonl", GOLD)
    return params, pred, tmp_path / "gold.jsonl"


def test_evaluate_writes_metrics_and_plot(tmp_path):
    params, pred, gold = _setup(tmp_path)
    metrics, plot = tmp_path / "metrics" / "evaluate-m.json", tmp_path / "plots" / "evaluate-m.json"
    args = ["--params", str(params), "--predictions", str(pred), "--gold", str(gold), "--metrics", str(metrics),
            "--plot", str(plot)]
    result = CliRunner().invoke(evaluate_main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(metrics.read_text())
    assert data["accuracy"] == 0.5 and data["accuracy/中1"] == 1.0 and data["accuracy/IA"] == 0.0
    assert data["pass@2"] == 1.0 and data["pass@1"] == 0.75 and "pass@3" not in data
    assert all(not isinstance(v, (dict, list)) for v in data.values())  # flat, for `dvc metrics`
    assert [p["k"] for p in json.loads(plot.read_text())] == [1, 2]

    table = CliRunner().invoke(report_main, ["--metrics", str(metrics)])
    assert table.exit_code == 0, table.output
    assert "| m | 50.0 |" in table.output and "—" in table.output


@pytest.mark.parametrize("broken", ["missing_predictions", "malformed_gold", "gold_without_solution", "unknown_id"])
def test_bad_input_is_one_clear_line(tmp_path, broken):
    params, pred, gold = _setup(tmp_path)
    if broken == "missing_predictions":
        (pred / "predictions.jsonl").unlink()
    elif broken == "malformed_gold":
        gold.write_text('{"id": "a", "solution": "3"}\n{oops\n', encoding="utf-8")
    elif broken == "gold_without_solution":
        gold.write_text('{"id": "a"}\n', encoding="utf-8")
    else:
        gold.write_text('{"id": "zzz", "solution": "3"}\n', encoding="utf-8")
    metrics = tmp_path / "m.json"
    result = CliRunner().invoke(evaluate_main, ["--params", str(params), "--predictions", str(pred),
                                                "--gold", str(gold), "--metrics", str(metrics)])
    assert result.exit_code != 0
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("Error:")
    assert not metrics.exists()


def test_report_missing_file_is_one_line(tmp_path):
    result = CliRunner().invoke(report_main, ["--metrics", str(tmp_path / "nope.json")])
    assert result.exit_code != 0 and "file not found" in result.output
