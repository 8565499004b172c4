"""benchmarks/sft_stage_mfu.py runs the sft stage's own train_sft on CPU at a tiny shape and writes its result."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_run_writes_mfu_with_provenance(tmp_path):
    out = tmp_path / "sft_stage_mfu.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "sft_stage_mfu.py"), "--tiny", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert 0 < result["mfu"] < 1 and 0 < result["baseline_mfu"] < 1
    assert result["tokens_per_s"] > 0 and result["card"] and result["date"] and result["commit"]
    assert "sft_stage_mfu.py --tiny" in result["command"]
    stage, baseline = result["runs"]["stage"]["settings"], result["runs"]["trl_default"]["settings"]
    assert stage["packing"] is True and baseline["packing"] is False  # the stage's fast path against TRL defaults
    assert result["runs"]["trl_default"]["gradient_checkpointing_resolved"] is True
