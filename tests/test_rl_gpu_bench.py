"""benchmarks/rl_gpu.py's bookkeeping for an async run that its box's time limit may cut."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import rl_gpu  # noqa: E402


def test_each_logged_async_step_reaches_the_result_as_it_happens():
    seen = []
    log = rl_gpu.step_log(on_step=lambda steps: seen.append(len(steps)))
    # TRL's async trainer logs its perf and batch figures as strings, once per step
    step_logs = {"loss": "0.01", "reward": "0.39", "perf/step_s": "67.2", "perf/fwd_bwd_s": "62.9",
                 "batch/samples_per_step": "2877", "perf/weight_sync_s": "0.16"}  # fmt: skip
    for step in (1, 2):
        log.on_log(None, SimpleNamespace(global_step=step), None, logs=step_logs)
    log.on_log(None, SimpleNamespace(global_step=2), None, logs={"train_runtime": "218.0", "train_loss": "0.01"})
    assert seen == [1, 2]  # the closing summary is not a step
    assert log.steps[1] == {"step": 2, "reward": 0.39, "step_s": 67.2, "fwd_bwd_s": 62.9,
                            "completions_per_step": 2877.0, "weight_sync_s": 0.16}  # fmt: skip
