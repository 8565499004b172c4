"""Aggregation weights per loss type: the per-group formulas, and weights measured through TRL's own loss code."""
from __future__ import annotations

import json
import random

import pytest

from ftllm.train.telemetry import (
    LOSS_TYPES,
    DvcLiveSink,
    TelemetryLog,
    aggregation_weights,
    group_rows,
    max_rel_error,
    measure_step_weights,
    ratio_to_grpo,
    step_row,
    trl_step_weights,
    weight_rows,
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


# ---------------------------------------------------------------------------
# Weights measured through TRL's own loss code


def test_trl_step_weights_model_each_normaliser():
    lengths = [6, 1, 3, 0]  # one micro-batch; the last completion is masked
    kw = dict(grad_accum=2, processes=1)
    # grpo: the masked completion weighs nothing, yet still counts in the mean (the step's weights sum to < 1)
    assert trl_step_weights(lengths, "grpo", **kw) == [1 / 8, 1 / 8, 1 / 8, 0.0]
    assert trl_step_weights(lengths, "bnpo", **kw) == [6 / 20, 1 / 20, 3 / 20, 0.0]
    assert trl_step_weights(lengths, "dr_grpo", max_completion_length=6, **kw) == [6 / 48, 1 / 48, 3 / 48, 0.0]
    # dapo divides by the generation batch's tokens (here 24 over both micro-batches), not the micro-batch's
    assert trl_step_weights(lengths, "dapo", generation_tokens=24, **kw) == [6 / 24, 1 / 24, 3 / 24, 0.0]
    # two processes: each process's loss is divided by its share of the tokens, then the processes averaged
    assert trl_step_weights(lengths, "dapo", generation_tokens=48, grad_accum=2, processes=2) == [
        6 / 48, 1 / 48, 3 / 48, 0.0,
    ]  # fmt: skip
    assert trl_step_weights(lengths, "grpo", grad_accum=2, processes=2) == [1 / 16, 1 / 16, 1 / 16, 0.0]
    with pytest.raises(ValueError, match="generation_tokens"):
        trl_step_weights(lengths, "dapo")


def test_max_rel_error():
    assert max_rel_error([1.0, 0.0], [1.0, 0.0]) == 0.0
    assert max_rel_error([1.1, 2.0], [1.0, 2.0]) == pytest.approx(0.1)
    assert max_rel_error([1e-9], [0.0]) == float("inf")


@pytest.fixture(scope="module")
def probe_trainer(tiny_model, tmp_path_factory):
    """A real FtllmGRPOTrainer on the tiny model, configured for 2 groups of 4 per step in 2 micro-batches."""
    from datasets import Dataset

    from ftllm.config import build
    from ftllm.models import load_model
    from ftllm.train.rl import RLConfig, grpo_args, make_trainer_class

    config = build(RLConfig, {
        "num_generations": 4, "prompts_per_step": 2, "per_device_batch_size": 4, "max_completion_length": 6,
        "dtype": "float32", "bf16": False, "gradient_checkpointing": False, "num_processes": 1,
    }, "rl")  # fmt: skip
    args = grpo_args(config, tmp_path_factory.mktemp("probe"))
    assert args.gradient_accumulation_steps == 2 and args.steps_per_generation == 2
    model, tokenizer = load_model(tiny_model, dtype="float32")
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": "1+1="}], "answer": "2"}] * 4)
    trainer = make_trainer_class()(
        model=model, reward_funcs=lambda completions, **_: [0.0] * len(completions), args=args,
        train_dataset=data, processing_class=tokenizer,
    )  # fmt: skip
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 2  # what the train loop sets for a full window
    return trainer


def micro_batch(lengths, generation_tokens, max_len=6, **extra):
    """One micro-batch as TRL's _prepare_inputs hands it to compute_loss (right-padded completions)."""
    import torch

    batch = len(lengths)
    return {
        "prompt_ids": torch.ones(batch, 3, dtype=torch.long),
        "prompt_mask": torch.ones(batch, 3, dtype=torch.long),
        "completion_ids": torch.ones(batch, max_len, dtype=torch.long),
        "completion_mask": torch.tensor([[1] * n + [0] * (max_len - n) for n in lengths]),
        "advantages": torch.tensor([0.7, -1.3, 0.2, 2.0][:batch]),  # replaced by 1: the result must not depend on it
        "old_per_token_logps": torch.full((batch, max_len), -0.5),  # replaced: ratio 1
        "num_items_in_batch": torch.tensor(generation_tokens),
        **extra,
    }


# The step's generation batch: 2 groups of 4, shuffled by TRL into 2 micro-batches of 4 (mixing the groups)
GROUPS = [[6, 1, 3, 2], [5, 5, 0, 2]]  # the 0 is a masked (e.g. truncated) completion
MICRO = [[6, 5, 3, 0], [1, 2, 5, 2]]
GEN_TOKENS = sum(map(sum, GROUPS))  # 24


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo", "bnpo", "luspo", "sapo"])
def test_measured_weights_match_trl_formula(probe_trainer, loss_type):
    """-∂loss/∂logp through GRPOTrainer._compute_loss, summed per completion, equals trl_step_weights."""
    probe_trainer.loss_type = loss_type
    measured_all, formula_all = [], []
    for lengths in MICRO:  # gradient accumulation: both micro-batches of the step
        measured = measure_step_weights(probe_trainer, micro_batch(lengths, GEN_TOKENS))
        formula = trl_step_weights(lengths, loss_type, grad_accum=2, generation_tokens=GEN_TOKENS,
                                   steps_per_generation=2, max_completion_length=6)  # fmt: skip
        assert measured == pytest.approx(formula, rel=1e-6, abs=1e-9)
        measured_all += measured
        formula_all += formula
    assert max_rel_error(measured_all, formula_all) < 1e-6
    if loss_type == "grpo":  # a mean over the step's 8 completions, the masked one contributing nothing
        assert measured_all == pytest.approx([1 / 8] * 3 + [0.0] + [1 / 8] * 4)
    if loss_type == "dapo":  # every unmasked token of the step weighs 1 / 24, whichever group it is in
        assert measured_all == pytest.approx([n / GEN_TOKENS for n in MICRO[0] + MICRO[1]])
        assert sum(measured_all) == pytest.approx(1.0)
    assert probe_trainer._metrics["train"] == {}  # the probe's metrics do not leak into the logs


def test_measured_weights_ignore_vllm_and_kl_inputs(probe_trainer):
    """With vLLM's importance weights and a KL term present, both are neutralised: the weight is the aggregation's."""
    import torch

    probe_trainer.loss_type, probe_trainer.beta = "dapo", 0.04
    probe_trainer.use_vllm, probe_trainer.vllm_importance_sampling_correction = True, True
    try:
        inputs = micro_batch(MICRO[0], GEN_TOKENS, importance_sampling_ratio=torch.full((4, 6), 1.7),
                             ref_per_token_logps=torch.full((4, 6), -2.0))  # fmt: skip
        measured = measure_step_weights(probe_trainer, inputs)
    finally:
        probe_trainer.beta, probe_trainer.use_vllm = 0.0, False
    assert measured == pytest.approx([n / GEN_TOKENS for n in MICRO[0]])


def test_weight_rows_place_completions_in_their_groups():
    flat = GROUPS[0] + GROUPS[1]
    indices = [0, 4, 2, 6]  # MICRO[0] = lengths 6, 5, 3, 0
    measured = [n / GEN_TOKENS for n in MICRO[0]]  # dapo
    rows = weight_rows(1, indices, flat, 4, measured, measured, "dapo", 6, completions_per_step=8)
    assert [(r["group"], r["completion"], r["length"]) for r in rows] == [(0, 0, 6), (1, 0, 5), (0, 2, 3), (1, 2, 0)]
    # group 0 has 12 tokens (mean 3), group 1 has 12 too: the reference's L_i / L_tot equals TRL's share here
    assert [r["m_reference"] for r in rows] == [0.5, 5 / 12, 0.25, 0.0]
    assert [r["ratio_to_grpo_measured"] for r in rows] == pytest.approx([2.0, 5 / 3, 1.0, 0.0])
    assert [r["length_over_batch_mean"] for r in rows] == pytest.approx([2.0, 5 / 3, 1.0, 0.0])
    assert [r["m_measured"] for r in rows] == pytest.approx([0.5, 5 / 12, 0.25, 0.0])


def test_unequal_groups_make_dapo_differ_from_the_per_group_formula():
    """TRL's dapo shares one denominator across groups: a completion weighs L_i / L̄ of the batch, not of its group."""
    flat = [2, 2, 8, 8]  # group 0: 4 tokens, group 1: 16 tokens
    measured = [n / 20 for n in flat]
    rows = weight_rows(1, [0, 1, 2, 3], flat, 2, measured, measured, "dapo", 8, completions_per_step=4)
    assert [r["length_over_mean"] for r in rows] == [1.0, 1.0, 1.0, 1.0]
    assert [r["ratio_to_grpo_measured"] for r in rows] == pytest.approx([0.4, 0.4, 1.6, 1.6])
    assert [r["m_reference"] for r in rows] == [0.5, 0.5, 0.5, 0.5]


def test_dvclive_sink_writes_metric_and_weight_plots(tmp_path):
    pytest.importorskip("dvclive")
    log = TelemetryLog()
    log.add_step({"step": 1, "reward_mean": 0.25, "completion_length_mean": 5.0})
    log.add_weights(weight_rows(1, [0, 1], [2, 6], 2, [0.25, 0.75], [0.25, 0.75], "dapo", 8, completions_per_step=2))
    sink = DvcLiveSink(tmp_path / "live", replay=log)
    sink.log_step({"step": 2, "reward_mean": 0.5, "completion_length_mean": 7.0})
    lines = (tmp_path / "live" / "plots" / "metrics" / "completion_length_mean.tsv").read_text().splitlines()
    assert [line.split("\t") for line in lines] == [["step", "completion_length_mean"], ["1", "5.0"], ["2", "7.0"]]
    weights = json.loads((tmp_path / "live" / "plots" / "custom" / "weights.json").read_text())
    assert [w["ratio_to_grpo_measured"] for w in weights] == [0.5, 1.5]
    DvcLiveSink(tmp_path / "live")  # a fresh sink starts the folder afresh (a resume replays what it keeps)
    assert not (tmp_path / "live" / "plots" / "metrics" / "reward_mean.tsv").exists()
