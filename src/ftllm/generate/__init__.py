"""Teacher data generation: condition grid → prompts → teacher samples → parsed rows, in shards.

    python stages/generate.py --params params.yaml --out data/raw --metrics metrics/generate.json

The grid is math fields (default: the Japanese curriculum units, see `grid.CURRICULUM`)
× difficulty 1–10 × tool use allowed/forbidden, with `samples_per_cell` samples each.
Items (cell, sample index) are cut into shards of `shard_size`; shard k is sampled with
its own seed (a hash of the global seed and k) and written atomically as
`<out>/shard-0000k.parquet`, its unparsable samples as `<out>/rejects/shard-0000k.parquet`
(with the reason). A shard file exists only when its shard is whole, so a rerun after a
crash or SIGKILL skips complete shards and redoes the rest; row ids hash (seed, cell,
sample index), so reruns and other machines give the same ids.

Scaling out needs no coordination: `--shard i/n` makes a process run only the shards
k with k % n == i.
- several GPUs on one host: one process per GPU, `CUDA_VISIBLE_DEVICES=i python
  stages/generate.py --shard i/n ...`, all writing the same `--out` (shards are
  disjoint), or a single process with vLLM data parallelism;
- several hosts: `--shard i/n` on each, then gather the `shard-*.parquet` (and
  `rejects/`) files into one folder and run the stage once more without `--shard`: every
  shard is complete, so it loads no model and only writes the metrics over all shards.
See docs/generate.md.
"""
from __future__ import annotations

import dataclasses

from ftllm.config import EngineSpec, SamplingSpec
from ftllm.generate.grid import CURRICULUM


def _default_fields() -> dict[str, tuple[str, ...]]:
    return dict(CURRICULUM)


def _default_sampling() -> SamplingSpec:
    # special tokens kept: harmony channels are how reasoning is told apart from the reply
    return SamplingSpec(n=1, temperature=1.0, top_p=1.0, max_new_tokens=4096, skip_special_tokens=False)


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    """The `generate` section of params.yaml."""

    teacher: EngineSpec
    sampling: SamplingSpec = dataclasses.field(default_factory=_default_sampling)
    fields: dict[str, list[str]] = dataclasses.field(default_factory=_default_fields)  # category -> units
    difficulties: list[int] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
    tool_use: list[bool] = (False, True)
    samples_per_cell: int = 4
    shard_size: int = 256  # a multiple of samples_per_cell gives one engine call per shard
    seed: int = 0
    language: str = "ja"  # ja | en: language of the built-in prompts
    reasoning_effort: str = "medium"  # low | medium | high: harmony `Reasoning:` line
    template_file: str | None = None  # YAML with any of system/user/rubric/tool_allowed/tool_forbidden/example
    system_template: str | None = None  # inline Jinja; wins over template_file
    user_template: str | None = None
    max_answer_chars: int = 200  # longer "answers" are rejected: they are solutions, not answers
    # text the assistant turn is started with, e.g. "<problem>": small models then keep the
    # format far more often; leave empty for harmony teachers (their turn opens with a channel)
    response_prefix: str = ""

    def __post_init__(self) -> None:
        fields = self.fields
        if not isinstance(fields, dict) or not fields:
            raise ValueError("fields: expected a non-empty mapping of category -> list of units")
        for category, units in fields.items():
            if not isinstance(units, (list, tuple)) or not units or not all(isinstance(u, str) and u for u in units):
                raise ValueError(f"fields.{category}: expected a non-empty list of unit names")
            if len(set(units)) != len(units):
                raise ValueError(f"fields.{category}: units repeat")
        object.__setattr__(self, "fields", {str(c): tuple(u) for c, u in fields.items()})
        if not self.difficulties or any(not 1 <= d <= 10 for d in self.difficulties):
            raise ValueError(f"difficulties: expected values in 1..10, got {list(self.difficulties)}")
        if len(set(self.difficulties)) != len(self.difficulties):
            raise ValueError("difficulties: values repeat")
        if not self.tool_use or len(set(self.tool_use)) != len(self.tool_use):
            raise ValueError(f"tool_use: expected [false], [true] or [false, true], got {list(self.tool_use)}")
        if self.sampling.n != 1:
            raise ValueError("sampling.n: must be 1; use samples_per_cell for more samples per condition")
        if self.samples_per_cell < 1:
            raise ValueError(f"samples_per_cell: must be >= 1, got {self.samples_per_cell}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size: must be >= 1, got {self.shard_size}")
        if self.language not in ("ja", "en"):
            raise ValueError(f"language: must be ja or en, got {self.language!r}")
        if self.reasoning_effort not in ("low", "medium", "high"):
            raise ValueError(f"reasoning_effort: must be low, medium or high, got {self.reasoning_effort!r}")
        if self.max_answer_chars < 1:
            raise ValueError(f"max_answer_chars: must be >= 1, got {self.max_answer_chars}")


from ftllm.generate.run import generate_shards  # noqa: E402  (run.py needs GenerateConfig defined)

__all__ = ["GenerateConfig", "generate_shards"]
