"""Chaos: predict and evaluate killed with SIGKILL at random moments (several seeds).

After every kill: no descendant process survives, every output is absent, the previous
whole version, or whole and identical to an uninterrupted run's; and a rerun produces
byte-identical files to the uninterrupted run.
"""
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.ftllm.test_no_orphans import descendants, survivors

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [0, 1, 2]


def files_of(path: Path) -> dict[str, bytes]:
    if not path.exists():
        return {}
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def stage(name: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "stages" / f"{name}.py"), *args]


def run_and_kill(argv: list[str], delay: float | None) -> float:
    """Run `argv`; SIGKILL it after `delay` seconds (None: let it finish). Returns the wall time."""
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if delay is None:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        return time.monotonic() - start
    family: dict[int, str] = {}
    deadline = start + delay
    while proc.poll() is None and time.monotonic() < deadline:
        family |= descendants(proc.pid)  # every process it ever had, to check none outlives it
        time.sleep(0.02)
    proc.kill()
    proc.communicate()
    settle = time.monotonic() + 10
    while survivors(family) and time.monotonic() < settle:
        time.sleep(0.05)
    assert survivors(family) == [], f"orphans after SIGKILL at {delay:.2f}s: {survivors(family)}"
    return time.monotonic() - start


@pytest.mark.slow
def test_killed_predict_and_evaluate_leave_nothing_half_and_rerun_identically(tmp_path, tiny_model):
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"id": i, "category": "中1", "unit": "正負の数", "problem": f"{i} + {i} = ?",
                                            "solution": f"${2 * i}$"}, ensure_ascii=False) + "\n"
                                for i in range(12)))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "predict": {"engine": {"model": str(tiny_model), "backend": "hf", "dtype": "float32", "max_model_len": 512,
                               "batch_size": 4},
                    "sampling": {"n": 3, "temperature": 1.0, "max_new_tokens": 24, "seed": 0}, "parse_workers": 2},
        "evaluate": {"workers": 2},
    }))

    def predict_argv(out: Path) -> list[str]:
        return stage("predict", "--params", str(params), "--input", str(problems), "--out", str(out))

    def evaluate_argv(predictions: Path, metrics: Path) -> list[str]:
        return stage("evaluate", "--params", str(params), "--predictions", str(predictions), "--gold", str(problems),
                     "--metrics", str(metrics), "--plot", str(metrics.with_suffix(".plot.json")))

    reference = tmp_path / "reference"
    predict_time = run_and_kill(predict_argv(reference / "pred"), None)
    evaluate_time = run_and_kill(evaluate_argv(reference / "pred", reference / "m.json"), None)
    want_predictions = files_of(reference / "pred")
    want_metrics = {**files_of(reference / "m.json"), **files_of(reference / "m.plot.json")}
    assert set(want_predictions) == {"predictions.jsonl", "samples.parquet"}

    for seed in SEEDS:
        rng = random.Random(seed)
        work = tmp_path / f"seed-{seed}"
        run_and_kill(predict_argv(work / "pred"), rng.uniform(0.2, predict_time))
        assert files_of(work / "pred") in ({}, want_predictions)  # nothing, or the whole output
        # a SIGKILLed writer cannot remove its (released) lock file or its temporary: both are named as such,
        # never as the output, and the next writer removes them (checked after the rerun below)
        left = {p.name for p in work.iterdir()} - {"pred", ".pred.lock"}
        assert all(name.startswith(".pred.tmp-") for name in left), left
        run_and_kill(predict_argv(work / "pred"), None)
        assert files_of(work / "pred") == want_predictions
        assert sorted(p.name for p in work.iterdir()) == ["pred"]

        metrics = work / "m.json"
        run_and_kill(evaluate_argv(work / "pred", metrics), rng.uniform(0.2, evaluate_time))
        got = {**files_of(metrics), **files_of(metrics.with_suffix(".plot.json"))}
        assert all(got[name] == want_metrics[name] for name in got)  # each file whole if present
        run_and_kill(evaluate_argv(work / "pred", metrics), None)
        assert {**files_of(metrics), **files_of(metrics.with_suffix(".plot.json"))} == want_metrics
        # m.config.json: the stage harness's resolved settings, beside the metrics
        assert sorted(p.name for p in work.iterdir()) == ["m.config.json", "m.json", "m.plot.json", "pred"]
