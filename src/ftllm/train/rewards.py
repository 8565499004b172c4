"""Verifiable rewards for RL, as a plain registry: name -> function.

`params.yaml` picks rewards by name with a weight each (`rl.rewards: {accuracy: 1.0, single_box: 0.1}`).
Every function follows TRL's reward protocol: called with the batch's `completions` (plain strings,
or chat messages for conversational prompts) plus the dataset's extra columns as keyword lists
(`answer`, ...), it returns one float per completion. Functions are module-level so they pickle
(TRL's asynchronous trainer scores rewards in a spawned process).

- `accuracy`: 1.0 when the completion's final answer matches the problem's `answer` under
  `ftllm.grade.is_correct` (the evaluation's own extraction and comparison), else 0.0.
- `single_box`: 1.0 when the completion has exactly one `\\boxed{...}`, else 0.0; graders read the last
  box, so several boxes hedge and none leaves nothing to grade.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence

from ftllm.grade import as_gold, is_correct

_BOXED = re.compile(r"\\boxed\s*\{")


def completion_text(completion) -> str:
    """The assistant text of one completion, whether TRL passes a string or a list of chat messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    return "".join(str(m.get("content") or "") for m in completion if m.get("role", "assistant") == "assistant")


def _grading_timeout_s() -> int | None:
    # math-verify times out through SIGALRM, which Python allows only in the main thread;
    # elsewhere (TRL's async reward worker, thread pools) a timeout would raise, so grade without one
    return 5 if threading.current_thread() is threading.main_thread() else None


def accuracy(completions: Sequence, answer: Sequence[str], **_: object) -> list[float]:
    """1.0 for a completion whose final answer the grader accepts against `answer`, else 0.0."""
    timeout_s = _grading_timeout_s()
    rewards = []
    for completion, gold in zip(completions, answer, strict=True):
        text = completion_text(completion)
        rewards.append(1.0 if text.strip() and is_correct(text, as_gold(gold), timeout_s=timeout_s) else 0.0)
    return rewards


def single_box(completions: Sequence, **_: object) -> list[float]:
    """1.0 for exactly one \\boxed{...} in the completion, else 0.0."""
    return [1.0 if len(_BOXED.findall(completion_text(c))) == 1 else 0.0 for c in completions]


REWARDS: dict[str, Callable[..., list[float]]] = {
    "accuracy": accuracy,
    "single_box": single_box,
}


def select_rewards(weights: dict[str, float]) -> tuple[list[Callable], list[float]]:
    """Reward functions and their weights, in params order, for names in `REWARDS`."""
    unknown = sorted(set(weights) - set(REWARDS))
    if unknown:
        raise ValueError(f"unknown reward(s) {', '.join(unknown)}; known: {', '.join(REWARDS)}")
    if not weights:
        raise ValueError("at least one reward is needed")
    return [REWARDS[name] for name in weights], [float(w) for w in weights.values()]
