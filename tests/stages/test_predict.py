"""Stage `predict` (and the competition entry point) on the tiny random model; bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from tests.stages.helpers import load_stage_main

main = load_stage_main("predict")

ROWS = [
    {"id": "q1", "category": "中1", "unit": "正負の数", "problem": "$2+3$ を計算しなさい。"},
    {"id": "q2", "category": "IA", "unit": "集合", "problem": "$\\{1,2\\}$ の要素の個数は？", "solution": "2"},
]


def _params(tmp_path, backend="hf", engine=None, **predict):
    section = {
        "engine": {"model": "overridden", "backend": backend, "dtype": "float32", "max_model_len": 256, "batch_size": 4,
                   "enforce_eager": True,  # vLLM: skip torch.compile (minutes on shared CPU cores)
                   **(engine or {})},
        "sampling": {"n": 2, "temperature": 1.0, "max_new_tokens": 8, "seed": 0},
        "parse_workers": 1,
        **predict,
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"predict": section}, allow_unicode=True), encoding="utf-8")
    return path


def _input(tmp_path, rows=ROWS):
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _check_outputs(out: Path, n: int = 2):
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [p["id"] for p in preds] == ["q1", "q2"]
    for pred, row in zip(preds, ROWS):
        assert {k: pred[k] for k in row} == row  # every input field kept
        assert isinstance(pred["output"], str) and pred["output"].startswith("\\boxed{")
    samples = pq.read_table(out / "samples.parquet").to_pylist()
    assert len(samples) == 2 * n
    assert set(samples[0]) >= {"id", "sample", "text", "num_tokens", "logprob", "answer", "class_index", "class_size"}
    assert sorted((s["id"], s["sample"]) for s in samples) == [("q1", 0), ("q1", 1), ("q2", 0), ("q2", 1)]


@pytest.mark.slow
def test_predict_on_tiny_model(tmp_path, tiny_model):
    out = tmp_path / "predictions" / "tiny"
    args = ["--params", str(_params(tmp_path)), "--model", str(tiny_model), "--input", str(_input(tmp_path)),
            "--out", str(out), "--metrics", str(tmp_path / "m.json")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    _check_outputs(out)
    assert not Path(str(out) + ".tmp").exists()
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["problems"] == 2 and metrics["samples"] == 4
    # where the time went after generation, as a rehearsal reads it from the metrics
    phases = metrics["phases_s"]
    assert set(phases) == {"generate", "vote_after_generation", "close_voter", "tie_break"}
    assert all(v >= 0 for v in phases.values()) and sum(phases.values()) <= metrics["seconds"]


@pytest.mark.slow
def test_submission_entry_point(tmp_path, tiny_model):
    """submission/main.py as the image runs it: offline, model dir given, params beside the working folder."""
    params = _params(tmp_path)
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, str(Path(__file__).resolve().parents[2] / "submission" / "main.py"),
           "--input_path", str(_input(tmp_path)), "--output_path", str(out), "--model_dir", str(tiny_model),
           "--params", str(params)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["q1", "q2"] and all(r["output"].startswith("\\boxed{") for r in rows)


@pytest.mark.slow
@pytest.mark.vllm
def test_predict_with_vllm(tmp_path, tiny_model):
    # the engine core in the stage's own process, as the GPU rehearsal runs it: the voter and its parse pool
    # are forked from a process that holds the engine
    params = _params(tmp_path, backend="vllm", engine={"in_process": True}, parse_workers=2)
    out = tmp_path / "pred"
    args = [sys.executable, str(Path(__file__).resolve().parents[2] / "stages" / "predict.py"),
            "--params", str(params), "--model", str(tiny_model),
            "--input", str(_input(tmp_path)), "--out", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_outputs(out)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "file not found"),
        ("", "file is empty"),
        ('{"id": 1, "problem": "p"}\n{not json\n', ":2: malformed JSON"),
        ('{"id": 1}\n', ":1: missing required field(s) problem"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, content, message):
    path = tmp_path / "problems.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    args = ["--params", str(_params(tmp_path)), "--input", str(path), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_bad_params_key_is_named(tmp_path):
    params = _params(tmp_path, strategyy="sc")
    result = CliRunner().invoke(main, ["--params", str(params), "--input", str(_input(tmp_path)),
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "predict.strategyy" in result.output


def test_help_names_the_section():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "`predict` section" in result.output
