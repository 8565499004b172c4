"""benchmarks/generate_dp.py: two generate shard workers (hf backend, CPU) on the stage's sharding, scaling recorded."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_one_and_two_workers_split_the_same_plan(tmp_path):
    out = tmp_path / "generate_dp.json"
    command = [sys.executable, str(REPO / "benchmarks" / "generate_dp.py"), "--model", "tiny", "--backend", "hf",
               "--counts", "1,2", "--units", "2", "--difficulties", "2", "--samples-per-cell", "4",
               "--shard-size", "4", "--max-new-tokens", "8", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["gpus"] == 2 and result["card"] and result["date"] and result["commit"]
    assert "generate_dp.py" in result["command"] and result["shards"] == 8 and result["uneven_counts"] == []
    one, two = result["runs"]["1"], result["runs"]["2"]
    assert one["samples"] == two["samples"] == 32  # the whole plan either way, split by the stage's i/n rule
    assert [w["shards"] for w in two["per_worker"]] == [4, 4]
    assert one["tokens"] > 0 and two["tokens"] > 0
    expected = two["tokens_per_s"] / (2 * one["tokens_per_s"])
    assert result["scaling_efficiency"] == pytest.approx(expected, rel=1e-3)
