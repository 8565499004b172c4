"""ftllm.report: intervals worked out by hand, and the summary read back from a toy pipeline tree."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ftllm.io import InputError
from ftllm.report import cluster_bootstrap, paired_bootstrap, render_summary, summarize, wilson


def test_wilson_matches_the_closed_form():
    # 0 of 16: centre = half-width = (z^2 / 32) / (1 + z^2 / 16) = 0.0968
    assert wilson(0, 16) == pytest.approx((0.0, 0.1936), abs=1e-4)
    # 8 of 16: 0.5 +- 1.96 * sqrt(1/64 + z^2/1024) / (1 + z^2/16) = 0.5 +- 0.2200
    assert wilson(8, 16) == pytest.approx((0.2800, 0.7200), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_cluster_bootstrap_is_the_pooled_rate_and_degenerate_when_every_problem_agrees():
    rate, low, high = cluster_bootstrap({"a": (4, 4), "b": (4, 4)})
    assert (rate, low, high) == (1.0, 1.0, 1.0)
    rate, low, high = cluster_bootstrap({"a": (4, 4), "b": (0, 4)})
    assert rate == 0.5 and low == 0.0 and high == 1.0  # two problems that disagree: anything is possible


def test_paired_bootstrap_sees_a_shift_on_every_problem_and_no_shift_in_a_copy():
    before = {str(i): (i % 2, 4) for i in range(10)}
    after = {str(i): (4, 4) for i in range(10)}
    diff, low, high = paired_bootstrap(before, after)
    assert diff == pytest.approx(1 - 5 / 40) and low > 0
    diff, low, high = paired_bootstrap(before, before)
    assert diff == 0.0 and low == 0.0 and high == 0.0


def _samples(path, texts_by_problem):
    rows = [{"id": pid, "sample": j, "text": t} for pid, texts in texts_by_problem.items() for j, t in enumerate(texts)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _tree(tmp_path, final_texts):
    m = tmp_path / "metrics"
    m.mkdir()
    (tmp_path / "plots").mkdir()
    (m / "generate.json").write_text(json.dumps({"samples": 120, "kept": 9, "reject.truncated": 47, "reject.x": 0}))
    (m / "judge.json").write_text(json.dumps({"input_rows": 9, "kept": 3, "drop_exact_duplicate": 5}))
    (m / "cpt.json").write_text(json.dumps({"steps": 8, "first_loss": 2.5, "final_loss": 2.0}))
    (m / "upscale.json").write_text(json.dumps({"original_layers": 30, "target_layers": 36}))
    (m / "sft.json").write_text(json.dumps({"steps": 8, "final_loss": 0.5}))
    (tmp_path / "plots" / "sft_loss.json").write_text(json.dumps([{"step": 1, "loss": 2.25}, {"step": 8, "loss": 0.5}]))
    (m / "rl.json").write_text(json.dumps({"steps": 2, "prompts": 3, "reward_first": 0.0, "reward_last": 0.25}))
    for name in ("base", "final"):
        (m / f"evaluate-{name}.json").write_text(json.dumps({"problems": 16, "accuracy": 0.0625}))
    base = {str(i): ["no box"] * 4 for i in range(8)}
    _samples(tmp_path / "predictions" / "base" / "samples.parquet", base)
    _samples(tmp_path / "predictions" / "final" / "samples.parquet", final_texts)


def test_summary_reads_every_stage_and_calls_a_clear_shift_learned(tmp_path):
    _tree(tmp_path, {str(i): ["so \\boxed{3}"] * 4 for i in range(8)})
    summary = summarize(tmp_path)
    assert summary["stages"]["generate"] == {"samples": 120, "parsed": 9, "rejects": {"truncated": 47}}
    assert summary["stages"]["sft"]["loss_first"] == 2.25 and summary["stages"]["sft"]["loss_last"] == 0.5
    assert summary["models"]["base"]["boxed"] == (0.0, 0.0, 0.0)
    assert summary["models"]["final"]["boxed"] == (1.0, 1.0, 1.0)
    assert summary["models"]["final"]["accuracy"][0] == pytest.approx(1 / 16)
    assert summary["boxed_change"]["learned"] is True
    text = render_summary(summary)
    assert "120 teacher samples -> 9 parsed rows (rejected: truncated 47)" in text
    assert "loss 2.250 -> 0.500" in text and "reward 0.000 -> 0.250" in text
    assert "upscale   30 -> 36 layers" in text
    assert "+100.0 points [+100.0, +100.0], learned" in text


def test_summary_calls_a_change_on_one_problem_noise(tmp_path):
    final = {str(i): ["no box"] * 4 for i in range(8)}
    final["0"] = ["\\boxed{1}"] * 4  # one problem of eight moved: a resample can leave it out
    _tree(tmp_path, final)
    summary = summarize(tmp_path)
    assert summary["boxed_change"]["learned"] is False
    assert "within noise" in render_summary(summary)


def test_summary_calls_a_clear_fall_worse_not_learned(tmp_path):
    _tree(tmp_path, {str(i): ["no box"] * 4 for i in range(8)})
    # base boxed everywhere, final nowhere
    _samples(tmp_path / "predictions" / "base" / "samples.parquet", {str(i): ["\\boxed{1}"] * 4 for i in range(8)})
    summary = summarize(tmp_path)
    assert summary["boxed_change"]["learned"] is False and summary["boxed_change"]["unlearned"] is True
    assert "worse beyond noise" in render_summary(summary)


def test_missing_stages_show_as_not_run_and_samples_without_text_name_the_file(tmp_path):
    (tmp_path / "metrics").mkdir()
    assert "cpt       not run" in render_summary(summarize(tmp_path))
    path = tmp_path / "predictions" / "base" / "samples.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"id": "1", "answer": "2"}]), path)
    with pytest.raises(InputError, match="samples.parquet: no column 'text'"):
        summarize(tmp_path)
