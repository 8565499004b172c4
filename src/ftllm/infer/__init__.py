"""Inference: sample solutions, vote, write the competition's `output` column.

`PredictConfig` is the `predict` section of params.yaml. The stage (`stages/predict.py`) and the
competition entry point (`ftllm.infer.submission`) both call `ftllm.infer.predict.predict`.

- `vote.py`: equivalence-class self-consistency (the grader's notion of equality);
- `predict.py`: plain self-consistency and the output files; `strategies/`: the registry `STRATEGIES`;
- `pool.py`: the time-limited process pool that parses untrusted answers;
- `strategies/`, `budget.py`: alternatives to plain self-consistency (RSA, budgeted sampling, ...).
"""
from __future__ import annotations

import dataclasses

from ftllm.config import EngineSpec, SamplingSpec
from ftllm.infer.budget import BudgetConfig
from ftllm.infer.strategies.retrieval import RetrievalConfig
from ftllm.infer.strategies.rsa import RSAConfig
from ftllm.infer.strategies.s1 import S1Config
from ftllm.infer.strategies.tir import TIRConfig
from ftllm.prompting import PromptSpec


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """YAML keys under `predict`."""

    engine: EngineSpec
    sampling: SamplingSpec = dataclasses.field(default_factory=SamplingSpec)  # n = samples per problem
    prompt: PromptSpec = dataclasses.field(default_factory=PromptSpec)  # the top-level `prompt` section (shared)
    strategy: str = "sc"  # a key of ftllm.infer.strategies.STRATEGIES
    parse_workers: int = 4  # processes that parse and cluster answers (0: in-process, no hard time limit)
    # of those, how many may work while vLLM is still generating (null: half; 0: vote only afterwards):
    # a small model's generation is CPU-bound too, and parsing on every core slows it down
    overlap_workers: int | None = None
    parse_timeout_s: int = 5  # per parse / per comparison (Math-Verify's alarm); a hung worker is killed at ~4x
    vote_timeout_s: float = 120.0  # one problem's clustering; past it the vote falls back to exact-string classes
    rsa: RSAConfig = dataclasses.field(default_factory=RSAConfig)  # used when strategy: rsa
    budget: BudgetConfig = dataclasses.field(default_factory=BudgetConfig)  # used when strategy: budget
    s1: S1Config = dataclasses.field(default_factory=S1Config)  # used when strategy: s1
    tir: TIRConfig = dataclasses.field(default_factory=TIRConfig)  # used when strategy: tir
    retrieval: RetrievalConfig = dataclasses.field(default_factory=RetrievalConfig)  # used when strategy: retrieval

    def __post_init__(self) -> None:
        if self.parse_workers < 0:
            raise ValueError(f"predict.parse_workers must be >= 0, got {self.parse_workers}")
        if self.overlap_workers is not None and not 0 <= self.overlap_workers <= self.parse_workers:
            raise ValueError(f"predict.overlap_workers must be null or 0..parse_workers, got {self.overlap_workers}")
        if self.parse_timeout_s < 1:
            raise ValueError("predict.parse_timeout_s must be >= 1 (Math-Verify alarms are whole seconds), "
                             f"got {self.parse_timeout_s}")
        from ftllm.infer.strategies import STRATEGIES

        if self.strategy not in STRATEGIES:
            raise ValueError(f"predict.strategy must be one of {', '.join(sorted(STRATEGIES))}, got {self.strategy!r}")
