"""Answer agreement: re-solve each problem k times and keep rows the re-solves back up.

The judge model solves the problem from scratch `k` times (one batched
`engine.chat` call with `n = k`); each re-solve's boxed answer is compared with
the row's given answer by `ftllm.grade.is_correct` (Math-Verify equivalence, the
grader's notion of "same answer"). A row passes when at least `min_agreement`
of the re-solves agree; a re-solve with no parseable answer counts as disagreeing.
"""
from __future__ import annotations

import dataclasses

from ftllm.config import SamplingSpec

SOLVE_PROMPT = (
    "Solve the following math problem step by step. "
    "Write the final answer in simplest form inside \\boxed{{}}.\n\n{problem}"
)


@dataclasses.dataclass(frozen=True)
class AgreementConfig:
    """Section `judge.agreement`."""

    enabled: bool = False
    k: int = 4  # re-solves per problem
    min_agreement: float = 0.5  # share of re-solves that must match the given answer
    sampling: SamplingSpec = SamplingSpec(temperature=0.7, top_p=0.95, max_new_tokens=2048, seed=0)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("k must be >= 1")
        if not 0.0 < self.min_agreement <= 1.0:
            raise ValueError("min_agreement must be in (0, 1]")


def agreement_shares(engine, rows: list[dict], config: AgreementConfig, template_kwargs: dict | None = None
                     ) -> list[float]:
    """For each row, the share of its k re-solves whose answer matches the row's `answer`."""
    from ftllm.grade import as_gold, is_correct

    if not rows:
        return []
    conversations = [[{"role": "user", "content": SOLVE_PROMPT.format(problem=r["problem"])}] for r in rows]
    sampling = dataclasses.replace(config.sampling, n=config.k)
    outputs = engine.chat(conversations, sampling, **(template_kwargs or {}))
    shares = []
    for row, samples in zip(rows, outputs):
        agree = sum(is_correct(s.text, as_gold(row["answer"])) for s in samples)
        shares.append(agree / max(1, len(samples)))
    return shares
