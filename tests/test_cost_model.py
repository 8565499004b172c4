"""benchmarks/cost_model.py: its arithmetic on toy shapes, every expected number worked out by hand."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("cost_model", ROOT / "benchmarks" / "cost_model.py")
cm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cm)

# 1000 weight bytes, 10 KV bytes per token, 50 active params; a card of 10 kB, 1000 B/s and 400 FLOP/s
MODEL = {"params": 100, "active_params": 50, "weight_bytes": 1000, "layers": 2, "hidden": 3, "kv_bytes_per_token": 10}
CARD = {"bf16_tflops": 4e-10, "hbm_tb_s": 1e-9, "memory_gb": 1e-5}


def test_step_bytes_are_weights_once_plus_each_sequences_kv():
    assert cm.decode_step_bytes(MODEL, batch=4, mean_context=5) == pytest.approx(1000 + 4 * 5 * 10)


def test_decode_seconds_charge_bytes_at_the_efficiency_and_host_time_per_sequence():
    # 40 tokens at batch 4 = 10 steps; a step reads 1200 B at 0.5 x 1000 B/s = 2.4 s, plus 4 x 0.1 s of host
    assert cm.decode_seconds(40, MODEL, CARD, 4, 5, 0.5, 0.1) == pytest.approx(10 * (2.4 + 0.4))


def test_a_measured_run_gives_back_its_efficiency_and_host_time():
    # batch 4 at 4/3 tokens/s: one step every 3 s; 1200 B in 3 s = 400 B/s = 0.4 of the card;
    # at 0.5 efficiency the bytes take 2.4 s, so 0.6 s of the step is host time: 0.15 s per sequence
    measured = {"batch": 4, "tokens_per_s": 4 / 3, "mean_context": 5}
    assert cm.decode_efficiency(measured, MODEL, CARD) == pytest.approx(0.4)
    assert cm.per_sequence_seconds(measured, MODEL, CARD, 0.5) == pytest.approx(0.15)


def test_concurrency_is_the_kv_left_after_the_weights():
    # half of 10 kB = 5000 B, less 1000 B of weights = 4000 B; a 100-token sequence holds 1000 B of KV
    assert cm.kv_concurrency(MODEL, CARD, 0.5, seq_tokens=100, cap=1024) == 4
    assert cm.kv_concurrency(MODEL, CARD, 0.5, seq_tokens=100, cap=3) == 3
    with pytest.raises(ValueError, match="do not fit"):
        cm.kv_concurrency(MODEL, CARD, 0.05, seq_tokens=100, cap=8)


def test_training_flops_count_weight_gradients_for_the_trainable_share_and_the_recompute():
    # (2 + 2 + 2 x 0.5 + 2) x 100 = 700, plus 12 x 2 layers x 3 hidden x 10 context = 720
    assert cm.train_flops_per_token(MODEL, 10, trainable_fraction=0.5, recompute=True) == pytest.approx(1420)
    assert cm.train_flops_per_token(MODEL, 10) == pytest.approx(600 + 720)


def test_sampling_hours_modelled_floor_and_ceiling():
    cal = {"per_sequence_s": 0.1, "efficiency": 0.25}
    out = cm.sampling_hours(MODEL, CARD, cal, 0.5, 100, sequences=8, prompt=10, output=40, memory_fraction=0.5)
    # batch: 4000 B of KV / (50 tokens x 10 B) = 8; 320 tokens = 40 steps of 1000 + 8 x 30 x 10 = 3400 B
    # prefill: 80 tokens x 2 x 50 FLOPs = 8000 FLOPs
    assert out["batch"] == 8
    assert out["gpu_hours"] * 3600 == pytest.approx(40 * (3400 / 500 + 0.8) + 8000 / 100)
    assert out["gpu_hours_floor"] * 3600 == pytest.approx(40 * 3400 / 1000 + 8000 / 400)
    assert out["gpu_hours_ceiling"] * 3600 == pytest.approx(40 * 3400 / 250 + 8000 / 100)


def test_tail_is_one_sequence_decoded_alone():
    cal = {"per_sequence_s": 0.0, "efficiency": 1.0}
    base = cm.sampling_hours(MODEL, CARD, cal, 1.0, 100, 8, 10, 40, 0.5)
    tailed = cm.sampling_hours(MODEL, CARD, cal, 1.0, 100, 8, 10, 40, 0.5, tail_tokens=20)
    # 20 steps at batch 1, context 10 + 10: 1000 + 200 B = 1.2 s each
    assert (tailed["gpu_hours"] - base["gpu_hours"]) * 3600 == pytest.approx(20 * 1.2)


def test_unknown_assumption_is_refused_by_name():
    with pytest.raises(SystemExit, match="teacher_tokens"):
        cm.assumption_values({"teacher_tokens": 1.0})


def test_committed_result_gives_hours_for_every_stage():
    result = json.loads((ROOT / "benchmarks" / "results" / "cost_model.json").read_text(encoding="utf-8"))
    for stage in ("generate", "judge", "cpt", "upscale", "sft", "rl", "predict"):
        hours = result["stages"][stage]["gpu_hours"]
        assert set(hours) == {"H100", "H200"}, stage
        assert all(h >= 0 for h in hours.values()), stage
        floor, ceiling = result["stages"][stage]["gpu_hours_floor"], result["stages"][stage]["gpu_hours_ceiling"]
        assert all(floor[c] <= hours[c] <= ceiling[c] for c in hours), stage
    assert {"device", "date", "command", "code"} <= set(result)
