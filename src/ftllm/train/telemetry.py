"""RL telemetry: how each loss type weighs the completions of a group, and per-step files for DVC plots.

The GRPO family differs mostly in how per-token losses are aggregated. Writing one group's
loss as  Σ_i m_i · ℓ̄_i,  with ℓ̄_i the mean per-token loss of completion i (L_i tokens), the
weights m_i follow from TRL 1.16's `GRPOTrainer._compute_loss` (one group as the batch, one
process, no gradient accumulation):

| loss_type                 | TRL aggregation                          | m_i                    |
|---------------------------|------------------------------------------|------------------------|
| grpo, sapo                | mean_i( Σ_t ℓ_it / L_i )                 | 1 / G                  |
| bnpo, dapo, cispo, vespo  | Σ_it ℓ_it / Σ_j L_j                      | L_i / L_tot            |
| dr_grpo                   | Σ_it ℓ_it / (G · max_completion_length)  | L_i / (G · L_max)      |
| luspo                     | mean_i( Σ_t ℓ_it )                       | L_i / G                |

The ratio to GRPO is m_i / (1/G) = G · m_i; for DAPO it is L_i / L̄ with L̄ = L_tot / G, which is
the length bias GRPO removes and DAPO keeps: long answers get proportionally more say.
(In a real step DAPO divides by the tokens of the whole generation batch and BNPO by those of
one micro-batch, not of one group; the per-group numbers here are the within-group shares.)
Masked completions (truncated under `mask_truncated_completions`, zero-variance groups under
`filter_zero_std_groups`) count with L_i = 0.

The table is a model of TRL, so it is also *measured*: `measure_step_weights` calls TRL's own
`_compute_loss` on one micro-batch with a leaf tensor in place of the policy's per-token
log-probabilities, advantages set to 1, the old log-probabilities (and vLLM's importance weights,
and the reference log-probabilities) equal to the new ones, so every ratio is 1 and the KL term has
no gradient. Then  -∂loss/∂logp_it  is the weight of token t, and its sum over t is the measured
weight of completion i in the optimizer step's loss. `trl_step_weights` is the same number from
the formula side, including what the per-group table leaves out: micro-batches, gradient
accumulation, processes, and the generation-batch token count that `dapo`/`cispo`/`vespo` divide
by (see docs/rl.md).

`TelemetryLog` keeps the rows and writes `steps.json` (one row per optimizer step), `groups.json`
(one row per completion) and `weights.json` (one row per completion of each measured micro-batch)
into a plots folder, atomically; `DvcLiveSink` logs the same rows through DVCLive for `dvc plots`.
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from ftllm.io import write_json

_PER_SEQUENCE = ("grpo", "sapo")
_PER_TOKEN = ("bnpo", "dapo", "cispo", "vespo")
LOSS_TYPES = _PER_SEQUENCE + _PER_TOKEN + ("dr_grpo", "luspo")


def aggregation_weights(
    lengths: Sequence[int], loss_type: str, max_completion_length: int | None = None,
) -> list[float]:
    """Weights m_i of each completion's mean token loss in one group's loss under `loss_type`."""
    group = len(lengths)
    if group == 0:
        return []
    if loss_type in _PER_SEQUENCE:
        return [1.0 / group] * group
    if loss_type in _PER_TOKEN:
        total = sum(lengths)
        # TRL clamps the token count to >= 1, so an all-masked group weighs nothing rather than dividing by zero
        return [length / max(total, 1) for length in lengths]
    if loss_type == "dr_grpo":
        if not max_completion_length:
            raise ValueError("dr_grpo weights need max_completion_length")
        return [length / (group * max_completion_length) for length in lengths]
    if loss_type == "luspo":
        return [float(length) / group for length in lengths]
    raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {', '.join(LOSS_TYPES)}")


_GENERATION_BATCH = ("dapo", "cispo", "vespo")  # TRL divides these by num_items_in_batch


def trl_step_weights(
    lengths: Sequence[int],
    loss_type: str,
    *,
    grad_accum: int = 1,
    processes: int = 1,
    steps_per_generation: int | None = None,
    generation_tokens: int | None = None,
    max_completion_length: int | None = None,
) -> list[float]:
    """Weight of each completion of one micro-batch in the optimizer step's loss, as TRL 1.16 builds it.

    `lengths` are the unmasked tokens of the micro-batch's completions on one process. The step's
    gradient is the mean over `processes` (DDP/FSDP average) of each process's sum over `grad_accum`
    micro-batches; `generation_tokens` is TRL's `num_items_in_batch`: the unmasked tokens of the whole
    generation batch, all processes (dapo, cispo, vespo divide by it).
    """
    batch = len(lengths)
    if batch == 0:
        return []
    scale = 1.0 / (grad_accum * processes)
    if loss_type in _PER_SEQUENCE:
        # a masked completion has no tokens to carry weight but still counts in the mean's denominator
        return [scale / batch if length else 0.0 for length in lengths]
    if loss_type == "bnpo":  # token mean of the micro-batch
        total = max(sum(lengths), 1)
        return [scale * length / total for length in lengths]
    if loss_type == "dr_grpo":
        if not max_completion_length:
            raise ValueError("dr_grpo weights need max_completion_length")
        return [scale * length / (batch * max_completion_length) for length in lengths]
    if loss_type == "luspo":
        return [scale * length / batch for length in lengths]
    if loss_type in _GENERATION_BATCH:
        if generation_tokens is None:
            raise ValueError(f"{loss_type} weights need generation_tokens (TRL's num_items_in_batch)")
        # TRL: Σ ℓ / (N_gen / W · GA / spg) per micro-batch, then the W processes are averaged
        spg = steps_per_generation or grad_accum
        return [length * spg / (max(generation_tokens, 1) * grad_accum) for length in lengths]
    raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {', '.join(LOSS_TYPES)}")


def measure_step_weights(trainer, inputs: dict) -> list[float]:
    """Each completion's weight in the optimizer step's loss, measured through `trainer._compute_loss`.

    TRL's own loss code runs on `inputs` (one micro-batch as `_prepare_inputs` hands it to
    `compute_loss`) with a leaf tensor in place of the policy's per-token log-probabilities; the
    advantages are set to 1 and the old, sampler and reference log-probabilities equal the new ones,
    so every ratio is 1 and KL has no gradient. The model does not run. Returns  -Σ_t ∂loss/∂logp_it
    divided by the process count (the step's gradient is the process mean). All processes must call
    it together: TRL's metric code inside gathers. Its metrics are discarded.
    """
    import torch

    ids = inputs["completion_ids"]
    logps = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device, requires_grad=True)
    probe = dict(inputs)
    probe["advantages"] = torch.ones(ids.shape[0], dtype=torch.float32, device=ids.device)
    probe["old_per_token_logps"] = None  # TRL then uses logps.detach(): ratio exactly 1
    if probe.get("importance_sampling_ratio") is not None:
        probe["importance_sampling_ratio"] = torch.ones_like(probe["importance_sampling_ratio"])
    for key in ("ref_per_token_logps", "sampling_per_token_logps"):
        if probe.get(key) is not None:
            probe[key] = torch.zeros_like(logps)
    aux = torch.zeros((), device=ids.device) if getattr(trainer, "aux_loss_enabled", False) else None

    def leaf_logps(*args, **kwargs):
        return logps, torch.zeros_like(logps), aux

    saved_metrics = trainer._metrics
    trainer._get_per_token_logps_and_entropies = leaf_logps  # instance attribute shadows the method
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    try:
        loss = trainer._compute_loss(trainer.model, probe)
    finally:
        del trainer._get_per_token_logps_and_entropies
        trainer._metrics = saved_metrics
    (grad,) = torch.autograd.grad(loss, logps)
    return (-grad.sum(dim=1) / trainer.accelerator.num_processes).tolist()


def weight_rows(
    step: int,
    indices: Sequence[int],
    batch_lengths: Sequence[int],
    group_size: int,
    measured: Sequence[float],
    formula: Sequence[float],
    loss_type: str,
    max_completion_length: int | None,
    completions_per_step: int,
) -> list[dict]:
    """One row per measured completion: measured and formula weights, and both next to the paper's m_i.

    `indices` place the micro-batch's completions in the generation batch whose lengths are
    `batch_lengths` (completion k belongs to group k // group_size). GRPO gives every completion of
    the step 1 / completions_per_step, so `ratio_to_grpo_measured` = measured · completions_per_step,
    and `m_measured` = that ratio / G is the measured weight in the reference's per-group notation.
    """
    batch_mean = sum(batch_lengths) / len(batch_lengths) if batch_lengths else 0.0
    rows = []
    for index, m_step, f_step in zip(indices, measured, formula, strict=True):
        g, i = divmod(int(index), group_size)
        group = [int(x) for x in batch_lengths[g * group_size : (g + 1) * group_size]]
        length, mean = group[i], sum(group) / group_size
        ratio = m_step * completions_per_step
        rows.append(
            {
                "step": step,
                "loss_type": loss_type,
                "group": g,
                "completion": i,
                "length": length,
                "length_over_mean": length / mean if mean else 0.0,
                "length_over_batch_mean": length / batch_mean if batch_mean else 0.0,
                "m_step_measured": m_step,
                "m_step_formula": f_step,
                "m_measured": ratio / group_size,
                "m_reference": aggregation_weights(group, loss_type, max_completion_length)[i],
                "ratio_to_grpo_measured": ratio,
                "ratio_to_grpo_formula": f_step * completions_per_step,
            }
        )
    return rows


def max_rel_error(measured: Sequence[float], formula: Sequence[float]) -> float:
    """max |measured - formula| / |formula| over completions the formula weighs (0-weight ones must measure 0)."""
    worst = 0.0
    for m, f in zip(measured, formula, strict=True):
        worst = max(worst, abs(m - f) / abs(f) if f else (0.0 if m == 0 else float("inf")))
    return worst


def ratio_to_grpo(weights: Sequence[float]) -> list[float]:
    """m_i / m_i^GRPO = G · m_i."""
    return [len(weights) * w for w in weights]


def group_rows(
    step: int, lengths: Sequence[int], group_size: int, loss_type: str, max_completion_length: int | None
) -> list[dict]:
    """Split a batch's completion lengths into groups of `group_size` and describe each completion's weight."""
    if group_size < 1 or len(lengths) % group_size:
        raise ValueError(f"{len(lengths)} completions do not split into groups of {group_size}")
    rows = []
    for g in range(len(lengths) // group_size):
        group = [int(x) for x in lengths[g * group_size : (g + 1) * group_size]]
        weights = aggregation_weights(group, loss_type, max_completion_length)
        mean_length = sum(group) / group_size
        for i, (length, m, ratio) in enumerate(zip(group, weights, ratio_to_grpo(weights))):
            rows.append(
                {
                    "step": step,
                    "group": g,
                    "completion": i,
                    "length": length,
                    "length_over_mean": length / mean_length if mean_length else 0.0,
                    "m": m,
                    "m_grpo": 1.0 / group_size,
                    "ratio_to_grpo": ratio,
                }
            )
    return rows


class TelemetryLog:
    """Per-step and per-completion telemetry rows, saved as JSON lists that `dvc plots` reads."""

    def __init__(self) -> None:
        self.steps: list[dict] = []
        self.groups: list[dict] = []
        self.weights: list[dict] = []

    def add_step(self, row: dict) -> None:
        self.steps.append(row)

    def add_groups(self, rows: list[dict]) -> None:
        self.groups.extend(rows)

    def add_weights(self, rows: list[dict]) -> None:
        self.weights.extend(rows)

    def truncate(self, last_step: int) -> None:
        """Forget rows after `last_step` (a resumed run redoes those steps)."""
        self.steps = [r for r in self.steps if r["step"] <= last_step]
        self.groups = [r for r in self.groups if r["step"] <= last_step]
        self.weights = [r for r in self.weights if r["step"] <= last_step]

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "steps.json", self.steps)
        write_json(folder / "groups.json", self.groups)
        write_json(folder / "weights.json", self.weights)

    @classmethod
    def load(cls, folder: str | Path) -> TelemetryLog:
        """Rows saved by `save`; an empty log when the folder holds none."""
        log = cls()
        folder = Path(folder)
        for name, attr in (("steps.json", "steps"), ("groups.json", "groups"), ("weights.json", "weights")):
            if (folder / name).exists():
                setattr(log, attr, json.loads((folder / name).read_text(encoding="utf-8")))
        return log


class DvcLiveSink:
    """Logs telemetry through DVCLive into `folder`: one `plots/metrics/<name>.tsv` per step value, and the
    measured weights as `plots/custom/weights.json` (dvc.yaml's top-level plots name both).

    DVCLive starts the folder afresh; a resumed run passes the checkpoint's rows as `replay`.
    """

    def __init__(self, folder: str | Path, replay: TelemetryLog | None = None) -> None:
        from dvclive import Live

        # no experiment commit, no dvc.yaml of its own: the stage's dvc.yaml declares the plots
        self.live = Live(str(folder), save_dvc_exp=False, dvcyaml=False, report=None)
        if replay is not None:
            for row in replay.steps:
                self.log_step(row)
            self.log_weights(replay.weights)

    def log_step(self, row: dict) -> None:
        self.live.step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                self.live.log_metric(key, float(value))

    def log_weights(self, rows: list[dict]) -> None:
        if rows:
            self.live.log_plot("weights", rows, x="length_over_mean", y="ratio_to_grpo_measured", template="scatter")


# TRL log keys -> telemetry names for the per-step rows
STEP_KEYS = {
    "reward": "reward_mean",
    "reward_std": "reward_std",
    "completions/mean_length": "completion_length_mean",
    "completions/max_length": "completion_length_max",
    "completions/clipped_ratio": "truncated_fraction",
    "clip_ratio/region_mean": "clip_fraction",
    "clip_ratio/low_mean": "clip_fraction_low",
    "clip_ratio/high_mean": "clip_fraction_high",
    "cispo_clip_ratio": "clip_fraction",
    "frac_reward_zero_std": "zero_std_fraction",
    "kl": "kl",
    "entropy": "entropy",
    "loss": "loss",
    "learning_rate": "learning_rate",
    "sampling/importance_sampling_ratio/mean": "is_ratio_mean",
}


def step_row(step: int, logs: dict) -> dict:
    """The telemetry row for one optimizer step from TRL's logged metrics (keys it lacks are left out)."""
    row: dict = {"step": step}
    for key, name in STEP_KEYS.items():
        value = logs.get(key)
        if isinstance(value, (int, float)):
            row[name] = float(value)
    for key, value in logs.items():  # one mean per reward function, named after the registry entry
        if key.startswith("rewards/") and key.endswith("/mean") and isinstance(value, (int, float)):
            row[f"reward_{key.split('/')[1]}"] = float(value)
    return row
