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
(In a real batch DAPO and BNPO divide by the tokens of the whole batch, not of one group; the
per-group numbers here are the within-group shares.)  Masked completions (truncated under
`mask_truncated_completions`, zero-variance groups under `filter_zero_std_groups`) count with L_i = 0.

`TelemetryLog` keeps the rows and writes `steps.json` (one row per optimizer step) and
`groups.json` (one row per completion) into a plots folder, atomically, for `dvc plots`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ftllm.io import write_json

_PER_SEQUENCE = ("grpo", "sapo")
_PER_TOKEN = ("bnpo", "dapo", "cispo", "vespo")
LOSS_TYPES = _PER_SEQUENCE + _PER_TOKEN + ("dr_grpo", "luspo")


def aggregation_weights(lengths: Sequence[int], loss_type: str, max_completion_length: int | None = None) -> list[float]:
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

    def add_step(self, row: dict) -> None:
        self.steps.append(row)

    def add_groups(self, rows: list[dict]) -> None:
        self.groups.extend(rows)

    def truncate(self, last_step: int) -> None:
        """Forget rows after `last_step` (a resumed run redoes those steps)."""
        self.steps = [r for r in self.steps if r["step"] <= last_step]
        self.groups = [r for r in self.groups if r["step"] <= last_step]

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "steps.json", self.steps)
        write_json(folder / "groups.json", self.groups)

    @classmethod
    def load(cls, folder: str | Path) -> "TelemetryLog":
        """Rows saved by `save`; an empty log when the folder holds none."""
        log = cls()
        folder = Path(folder)
        for name, attr in (("steps.json", "steps"), ("groups.json", "groups")):
            if (folder / name).exists():
                setattr(log, attr, json.loads((folder / name).read_text(encoding="utf-8")))
        return log


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
