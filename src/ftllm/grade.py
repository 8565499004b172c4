"""Grader-equivalent verdicts: does an `output` match a gold `solution`?

Mirrors the official `math-eval` extraction: Math-Verify with
`LatexExtractionConfig(units=False, boxed="all")` plus `ExprExtractionConfig`.
(First version; see ../shared/reference/grader.md for the full rule set.)
"""
from __future__ import annotations

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from math_verify.parser import NormalizationConfig


def extraction_config():
    return [
        LatexExtractionConfig(
            normalization_config=NormalizationConfig(
                basic_latex=True, units=False, malformed_operators=False, nits=False, boxed="all", equations=False
            ),
            boxed_match_priority=0,
        ),
        ExprExtractionConfig(),
    ]


def extract_answer(text: str, timeout_s: int | None = 5):
    """Parse the final answer out of model text; [] when nothing parses."""
    try:
        return parse(text, extraction_config=extraction_config(), parsing_timeout=timeout_s)
    except Exception:
        return []


def is_correct(output: str, solution: str | list[str], method: str = "soft", timeout_s: int | None = 5) -> bool:
    """True when `output` matches the gold `solution` (any of a list) under `method`."""
    golds = solution if isinstance(solution, list) else [solution]
    pred = extract_answer(output, timeout_s)
    if not pred:
        return False
    for gold in golds:
        gold_parsed = extract_answer(gold if "$" in gold or "\\boxed" in gold else f"${gold}$", timeout_s)
        try:
            if gold_parsed and verify(gold_parsed, pred, strict=method.endswith("strict"), timeout_seconds=timeout_s):
                return True
        except Exception:
            continue
    return False
