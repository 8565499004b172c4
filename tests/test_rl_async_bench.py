"""benchmarks/rl_async.py: batch split and run sections, and the sync run on two gloo processes through the launcher."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import rl_async  # noqa: E402


def test_per_device_batch_splits_a_step_evenly():
    assert rl_async.per_device_batch(384, 6, 32) == 32  # 64 per process -> micro-batches of 32, 2 accumulated
    assert rl_async.per_device_batch(384, 8, 32) == 24
    assert rl_async.per_device_batch(8, 2, 32) == 4
    with pytest.raises(SystemExit, match="prompts-per-step"):
        rl_async.per_device_batch(384, 5, 32)


def test_async_section_points_at_the_server_with_the_policy_lag():
    args = rl_async.parse_args(["--device", "cpu", "--max-staleness", "2", "--prompts-per-step", "48"])
    config = rl_async.run_section(args, "async", 3, "conf/accelerate/ddp.yaml", "http://127.0.0.1:9")
    assert config.mode == "async" and config.vllm_server_base_url == "http://127.0.0.1:9"
    assert config.max_staleness == 2 and config.num_processes == 3
    assert (config.prompts_per_step * config.num_generations) % (config.per_device_batch_size * 3) == 0
    sync = rl_async.run_section(args, "sync", 4, "conf/accelerate/ddp.yaml", None)
    assert sync.mode == "sync" and sync.num_processes == 4 and sync.vllm_server_base_url is None


@pytest.mark.slow
def test_cpu_run_trains_sync_on_two_processes_and_records_async_as_not_run(tmp_path):
    out = tmp_path / "rl_async.json"
    command = [sys.executable, str(REPO / "benchmarks" / "rl_async.py"), "--model", "tiny", "--device", "cpu",
               "--gpus", "2", "--sft-steps", "2", "--rl-steps", "3", "--digits", "1", "--prompts-per-step", "2",
               "--num-generations", "4", "--max-completion-length", "8", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]  # each run's error line is in stdout
    result = json.loads(out.read_text())
    assert result["gpus"] == 2 and result["card"] == "cpu" and result["date"] and result["commit"]
    sync = result["runs"]["sync"]
    assert sync["processes"] == 2 and sync["steps"] == 3 and sync["steps_per_s"] > 0
    assert result["sync_steps_per_s"] == sync["steps_per_s"] and result["speedup_vs_sync"] is None
    assert result["runs"]["async"]["ran"] is False and "GPUs" in result["runs"]["async"]["error"]
    assert result["split"]["async_server_gpus"] == ["1"] and result["split"]["async_trainer_gpus"] == ["0"]
