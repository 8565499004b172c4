"""benchmarks/rehearsal.py's bookkeeping: DVC's lines, and a run continued over two calls on one box."""
from __future__ import annotations

import sys
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import rehearsal  # noqa: E402


def test_dvc_lines_mark_running_and_skipped_stages():
    assert rehearsal.STAGE_LINE.search("Running stage 'predict@base':").group(1) == "predict@base"
    for line in ("Stage 'judge' didn't change, skipping",
                 "Stage 'judge' is cached - skipping run, checking out outputs"):
        assert rehearsal.SKIP_LINE.search(line).group(1) == "judge"


def test_a_continued_run_keeps_the_first_calls_finished_stages_in_dag_order():
    earlier = {"base": {"wall_s": 36.0, "finished": True}, "generate": {"wall_s": 129.0, "finished": True},
               "cpt": {"wall_s": 15.0, "finished": False}}  # fmt: skip
    current = {"base": {"skipped": True}, "generate": {"skipped": True}, "cpt": {"wall_s": 40.0, "finished": True},
               "sft": {"wall_s": 50.0, "finished": True}}  # fmt: skip
    merged = rehearsal.carry_over(earlier, current)
    assert list(merged) == ["base", "generate", "cpt", "sft"]
    assert merged["base"] == {"wall_s": 36.0, "finished": True, "measured_in": "previous call"}
    assert merged["cpt"] == {"wall_s": 40.0, "finished": True}  # the stage the deadline cut is this call's
    # a stage this call ran again is never replaced by the earlier measurement
    assert rehearsal.carry_over({"base": {"wall_s": 1.0, "finished": True}},
                                {"base": {"wall_s": 2.0, "finished": True}})["base"]["wall_s"] == 2.0


def test_continue_puts_back_the_lock_the_last_call_wrote(tmp_path, monkeypatch):
    monkeypatch.setattr(rehearsal, "ROOT", tmp_path)
    monkeypatch.setattr(rehearsal, "STATE_DIR", tmp_path / ".rehearsal")
    with pytest.raises(click.UsageError, match="no earlier call's state"):
        rehearsal.resume_state()
    (tmp_path / "dvc.lock").write_text("stages: {cpt: finished-on-the-box}\n")
    rehearsal.save_state({"stages": {"cpt": {"wall_s": 60.0, "finished": True}}})
    # the next call arrives with the tracked dvc.lock sent again, which knows nothing of the box's stages
    (tmp_path / "dvc.lock").write_text("stages: {cpt: from-the-checkout}\n")
    earlier = rehearsal.resume_state()
    assert earlier["stages"]["cpt"]["finished"]
    assert (tmp_path / "dvc.lock").read_text() == "stages: {cpt: finished-on-the-box}\n"
