"""Cheap row filters, run before anything that compares rows or calls a model.

Each filter looks at one row and returns `None` when the row passes, or a
`Drop(reason, detail)` saying why not. The reasons are the metric names.
"""
from __future__ import annotations

import dataclasses

from ftllm.judge.text import LANGUAGE_SHARE


@dataclasses.dataclass(frozen=True)
class Drop:
    """Why a row left the set: `reason` is the metric key, `detail` a short human note."""

    reason: str
    detail: str = ""
    match_id: str | None = None  # the row / eval problem it collided with (dedup, decontam)


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    """Format, length and language bounds (section `judge.filters`)."""

    required_fields: list[str] = ("problem", "solution", "answer")  # empty or missing -> `missing_field`
    parse_answer: bool = True  # drop rows whose answer Math-Verify cannot parse (`answer_unparseable`)
    min_problem_chars: int = 10
    max_problem_chars: int = 4000
    min_solution_chars: int = 20
    max_solution_chars: int = 16000
    language: str | None = "ja"  # expected language of `language_fields`; null turns the check off
    language_fields: list[str] = ("problem",)
    min_language_share: float = 0.3  # share of Japanese characters outside math spans

    def __post_init__(self) -> None:
        if self.min_problem_chars > self.max_problem_chars:
            raise ValueError("min_problem_chars must be <= max_problem_chars")
        if self.min_solution_chars > self.max_solution_chars:
            raise ValueError("min_solution_chars must be <= max_solution_chars")
        if self.language is not None and self.language not in LANGUAGE_SHARE:
            raise ValueError(f"language must be one of {sorted(LANGUAGE_SHARE)} or null, got {self.language!r}")
        if not 0.0 <= self.min_language_share <= 1.0:
            raise ValueError("min_language_share must be in [0, 1]")


def parse_given_answer(answer: str) -> list:
    """Math-Verify parse of a bare final answer; [] when it does not parse to math.

    The answer is boxed before parsing, the way a model would write it, so both
    `12` and `\\frac{1}{2}` go through the grader's own extraction. Math-Verify
    falls back to the raw string for text such as `わからない`; a parse holding
    only that fallback string is no answer at all.
    """
    from ftllm.grade import extract_answer

    text = (answer or "").strip()
    if not text:
        return []
    if "\\boxed" not in text:
        text = "\\boxed{" + text.strip("$").strip() + "}"
    parsed = extract_answer(text)
    return parsed if any(not isinstance(p, str) for p in parsed) else []


def check_format(row: dict, config: FilterConfig) -> Drop | None:
    """Every required field present and non-empty, and the answer parseable by Math-Verify."""
    for field in config.required_fields:
        value = row.get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            return Drop("missing_field", f"{field} is empty")
    if config.parse_answer and not parse_given_answer(str(row.get("answer") or "")):
        return Drop("answer_unparseable", f"answer {str(row.get('answer'))[:80]!r} does not parse")
    return None


def check_length(row: dict, config: FilterConfig) -> Drop | None:
    bounds = {
        "problem": (config.min_problem_chars, config.max_problem_chars),
        "solution": (config.min_solution_chars, config.max_solution_chars),
    }
    for field, (low, high) in bounds.items():
        size = len(str(row.get(field) or ""))
        if size < low:
            return Drop("too_short", f"{field} has {size} chars < {low}")
        if size > high:
            return Drop("too_long", f"{field} has {size} chars > {high}")
    return None


def check_language(row: dict, config: FilterConfig) -> Drop | None:
    if config.language is None:
        return None
    share_of = LANGUAGE_SHARE[config.language]
    for field in config.language_fields:
        share = share_of(str(row.get(field) or ""))
        if share < config.min_language_share:
            return Drop("wrong_language", f"{field}: {config.language} share {share:.2f} < {config.min_language_share}")
    return None


# Cheapest first; a row takes the reason of the first filter that drops it.
ROW_FILTERS = (check_format, check_length, check_language)


def filter_row(row: dict, config: FilterConfig) -> Drop | None:
    for check in ROW_FILTERS:
        drop = check(row, config)
        if drop is not None:
            return drop
    return None
