"""Aggregation weights per loss type, checked against TRL's formulas and the DAPO/GRPO identity."""
from __future__ import annotations

import random

import pytest

from ftllm.train.telemetry import (
    LOSS_TYPES,
    TelemetryLog,
    aggregation_weights,
    group_rows,
    ratio_to_grpo,
    step_row,
)


def test_dapo_over_grpo_is_length_over_mean_length_exactly():
    lengths = [1, 2, 3, 2]  # L_tot = 8, L̄ = 2: every quotient is exact in binary floating point
    mean = sum(lengths) / len(lengths)
    dapo = aggregation_weights(lengths, "dapo")
    grpo = aggregation_weights(lengths, "grpo")
    assert dapo == [0.125, 0.25, 0.375, 0.25]
    assert grpo == [0.25] * 4
    assert [d / g for d, g in zip(dapo, grpo)] == [length / mean for length in lengths]
    assert ratio_to_grpo(dapo) == [length / mean for length in lengths]


def test_identity_holds_on_random_groups():
    rng = random.Random(0)
    for _ in range(50):
        lengths = [rng.randint(1, 500) for _ in range(rng.randint(2, 16))]
        mean = sum(lengths) / len(lengths)
        ratios = ratio_to_grpo(aggregation_weights(lengths, "dapo"))
        assert ratios == pytest.approx([length / mean for length in lengths], rel=1e-12)


def test_weights_of_each_loss_type():
    lengths = [4, 8]
    assert aggregation_weights(lengths, "dr_grpo", max_completion_length=16) == [4 / 32, 8 / 32]
    assert aggregation_weights(lengths, "luspo") == [2.0, 4.0]
    assert aggregation_weights(lengths, "bnpo") == aggregation_weights(lengths, "cispo") == [1 / 3, 2 / 3]
    assert aggregation_weights(lengths, "sapo") == [0.5, 0.5]
    assert aggregation_weights([0, 0], "dapo") == [0.0, 0.0]  # an all-masked group weighs nothing
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregation_weights(lengths, "dr_grpo")
    with pytest.raises(ValueError, match="unknown loss_type"):
        aggregation_weights(lengths, "ppo")


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo", "luspo"])
def test_weights_reproduce_trl_aggregation(loss_type):
    """Σ m_i · mean_t(ℓ_it) equals TRL 1.16's aggregation of a padded per-token loss (one group, one process)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    lengths, max_len = [3, 7, 1, 5], 8
    mask = torch.tensor([[1.0] * n + [0.0] * (max_len - n) for n in lengths])
    loss = torch.randn(len(lengths), max_len)
    per_token = loss * mask
    if loss_type == "grpo":  # grpo_trainer.py: mean over sequences of the sequence's token mean
        trl = (per_token.sum(-1) / mask.sum(-1)).mean()
    elif loss_type in ("bnpo", "dapo"):  # sum over tokens / active tokens
        trl = per_token.sum() / mask.sum()
    elif loss_type == "dr_grpo":  # sum / (B · max_completion_length)
        trl = per_token.sum() / (len(lengths) * max_len)
    else:  # luspo: sequence sums, averaged over sequences
        trl = per_token.sum(-1).mean()
    seq_means = per_token.sum(-1) / mask.sum(-1)
    weights = torch.tensor(aggregation_weights(lengths, loss_type, max_completion_length=max_len))
    assert float((weights * seq_means).sum()) == pytest.approx(float(trl), rel=1e-5)


def test_group_rows_split_a_batch_into_groups():
    rows = group_rows(3, [2, 2, 1, 3], group_size=2, loss_type="dapo", max_completion_length=8)
    assert [(r["step"], r["group"], r["completion"]) for r in rows] == [(3, 0, 0), (3, 0, 1), (3, 1, 0), (3, 1, 1)]
    assert [r["m"] for r in rows] == [0.5, 0.5, 0.25, 0.75]
    assert [r["ratio_to_grpo"] for r in rows] == [r["length_over_mean"] for r in rows]
    with pytest.raises(ValueError, match="groups of 3"):
        group_rows(1, [1, 2, 3, 4], group_size=3, loss_type="grpo", max_completion_length=8)


def test_step_row_maps_trl_keys():
    logs = {"reward": 0.5, "reward_std": 0.1, "clip_ratio/region_mean": 0.02, "completions/max_length": 9.0,
            "rewards/accuracy/mean": 0.5, "rewards/accuracy/std": 0.4, "clip_ratio/low_min": None}  # fmt: skip
    assert step_row(7, logs) == {
        "step": 7, "reward_mean": 0.5, "reward_std": 0.1, "clip_fraction": 0.02, "completion_length_max": 9.0,
        "reward_accuracy": 0.5,
    }  # fmt: skip


def test_telemetry_log_round_trip_and_truncate(tmp_path):
    log = TelemetryLog()
    for step in (1, 2, 3):
        log.add_step({"step": step, "reward_mean": step / 10})
        log.add_groups(group_rows(step, [1, 3], 2, "grpo", 4))
    log.save(tmp_path)
    loaded = TelemetryLog.load(tmp_path)
    assert loaded.steps == log.steps and loaded.groups == log.groups
    loaded.truncate(2)
    assert [r["step"] for r in loaded.steps] == [1, 2]
    assert {r["step"] for r in loaded.groups} == {1, 2}
    assert TelemetryLog.load(tmp_path / "missing").steps == []


def test_every_loss_type_has_weights():
    for loss_type in LOSS_TYPES:
        assert len(aggregation_weights([1, 2], loss_type, max_completion_length=4)) == 2
