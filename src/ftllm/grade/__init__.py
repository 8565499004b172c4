"""Grader-equivalent verdicts: does an `output` match a gold `solution` under the row's `evaluation_method`?

Mirrors the official `math-eval` (../shared/reference/grader.md): the prediction is cleaned
(`clean.py`), parsed with Math-Verify (LaTeX with units off and every `\\boxed{}`, plus plain
expressions), retried without a leading noise token, then compared:

- `soft` (default): value equality, then fallbacks in turn (`FALLBACKS`);
- `strict`: the same SymPy tree (srepr), plus the decimal-rounding, decimal->fraction and keyword fallbacks;
- `complex`: `i` is the imaginary unit, direct and numeric equality, then soft;
- `complex-strict`: `i` as the imaginary unit with the same (unevaluated) tree, then strict.

    is_correct("答えは $\\frac{1}{2}$", "0.5")                      # True
    grade_row({"id": 1, "output": "\\boxed{x=2}"}, {"id": 1, "solution": ["2", "x=2"]})  # True

Any error while parsing or verifying counts as wrong, as in the grader.
"""
from __future__ import annotations

import functools

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse
from math_verify.parser import NormalizationConfig

from ftllm.grade import compare, rewrite
from ftllm.grade.clean import clean_text, drop_noise, looks_pathological

METHODS = ("soft", "strict", "complex", "complex-strict")


def extraction_config() -> list:
    """The grader's extraction: LaTeX (units off, every box) plus plain expressions."""
    return [
        LatexExtractionConfig(
            normalization_config=NormalizationConfig(
                basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="all", equations=False
            )
        ),
        ExprExtractionConfig(),
    ]


_CONFIG = extraction_config()


def parse_clean(text: str, timeout_s: int | None = 5) -> list:
    """Math-Verify on already-cleaned text; [] on any failure."""
    try:
        return parse(text, extraction_config=_CONFIG, parsing_timeout=compare.arm(timeout_s))
    except BaseException as err:  # parse can raise TimeoutException (a BaseException)
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        return []


@functools.lru_cache(maxsize=4096)
def extract_answer(text: str, timeout_s: int | None = 5) -> list:
    """Parse the final answer out of model text: `[sympy_object, matched_string]`, or [] when nothing parses.

    Cached: voting compares each answer with many class representatives (SymPy objects are immutable;
    callers must not mutate the returned list).
    """
    cleaned = clean_text(text)
    parsed = parse_clean(cleaned, timeout_s)
    if not compare.sympy_items(parsed):
        retry = drop_noise(cleaned)
        if retry != cleaned:
            parsed = parse_clean(retry, timeout_s) or parsed
    return parsed


def answer_text(text: str, timeout_s: int | None = 5, screen: bool = True) -> str | None:
    """The extracted answer as a `$...$` string (what voting compares and emits); None if nothing parses.

    `screen` skips pathological text (`looks_pathological`) without parsing it: fine for voting,
    where such an answer is never the right one, but not for grading, which must follow the grader.
    """
    if screen and looks_pathological(text or ""):
        return None
    parsed = extract_answer(text, timeout_s)
    if not compare.sympy_items(parsed):
        return None
    matched = next((p for p in parsed if isinstance(p, str) and p.strip()), None)
    if matched is None:
        import sympy

        matched = sympy.latex(compare.sympy_items(parsed)[0])
    return f"${matched.strip()}$"


def answers_match(gold_text: str, pred_text: str, method: str = "soft", timeout_s: int | None = 5) -> bool:
    """True when `pred_text` matches `gold_text` under `method` (gold first: the check is not symmetric)."""
    if method not in METHODS:
        raise ValueError(f"evaluation_method must be one of {', '.join(METHODS)}, got {method!r}")
    try:
        gold, pred = extract_answer(gold_text, timeout_s), extract_answer(pred_text, timeout_s)
        gold_str, pred_str = _matched(gold, gold_text), _matched(pred, pred_text)
        if method == "complex-strict":
            # no calculation: substituting I must not let SymPy expand 2(1+i) into 2+2i
            gold_c, pred_c = (compare.with_imaginary_unit(x, evaluate=False) for x in (gold, pred))
            ok = compare.same_tree(gold_c, pred_c, timeout_s)
            return ok or _match_strict(gold, pred, gold_str, pred_str, timeout_s)
        if method == "complex":
            ok = compare.same_complex_value(gold, pred, timeout_s)
            return ok or _match_soft(gold, pred, gold_str, pred_str, timeout_s)
        if method == "strict":
            return _match_strict(gold, pred, gold_str, pred_str, timeout_s)
        return _match_soft(gold, pred, gold_str, pred_str, timeout_s)
    except Exception:  # the grader counts any error as a wrong answer
        return False


def _matched(parsed: list, text: str) -> str:
    """The answer string the fallbacks rewrite: the extractor's match when there is one, else the cleaned text."""
    matched = next((p for p in parsed if isinstance(p, str) and p.strip()), None)
    return f"${matched.strip()}$" if matched else clean_text(text)


# Text fallbacks shared by soft and strict: (name, rewrite applied to both sides).
SHARED_REWRITES = (("decimal_to_fraction", rewrite.decimals_to_fractions), ("keywords", rewrite.keywords_to_latex))
SOFT_REWRITES = (
    ("brackets", rewrite.swap_brackets),
    ("plus_minus", rewrite.expand_plus_minus),
    ("dict", rewrite.dict_to_equations),
)


def _reparse_equal(gold_str: str, pred_str: str, rewrite_fn, same, timeout_s) -> bool:
    new_gold, new_pred = rewrite_fn(gold_str), rewrite_fn(pred_str)
    if (new_gold, new_pred) == (gold_str, pred_str):
        return False  # the fallback does not apply: skip a useless re-parse
    return same(extract_answer(new_gold, timeout_s), extract_answer(new_pred, timeout_s))


def _match_strict(gold, pred, gold_str, pred_str, timeout_s) -> bool:
    same = lambda g, p: compare.same_tree(g, p, timeout_s)  # noqa: E731
    if same(gold, pred) or compare.rounds_to(gold_str, gold, pred_str, pred, timeout_s):
        return True
    return any(_reparse_equal(gold_str, pred_str, fn, same, timeout_s) for _, fn in SHARED_REWRITES)


def _match_soft(gold, pred, gold_str, pred_str, timeout_s) -> bool:
    same = lambda g, p: compare.same_value(g, p, timeout_s)  # noqa: E731
    if same(gold, pred):
        return True
    both_intervals = all(_is_interval(x) for x in (gold, pred))
    for name, fn in SOFT_REWRITES + SHARED_REWRITES:
        if name == "brackets" and both_intervals:
            continue  # [1, 2] and (1, 2) are different intervals, not bracket variants
        if _reparse_equal(gold_str, pred_str, fn, same, timeout_s):
            return True
    if same(compare.vectors_as_tuples(gold), compare.vectors_as_tuples(pred)):
        return True
    if compare.rounds_to(gold_str, gold, pred_str, pred, timeout_s):
        return True
    # degrees -> radians: only a prediction in degrees against a gold in radians
    if rewrite.has_degrees(pred_str) and not rewrite.has_degrees(gold_str):
        if same(gold, extract_answer(rewrite.degrees_to_radians(pred_str), timeout_s)):
            return True
    if compare.same_value(gold, pred, timeout_s, set_relation=True) or compare.same_atoms(gold, pred, timeout_s):
        return True
    if same(compare.intervals_as_tuples(gold), compare.intervals_as_tuples(pred)):
        return True
    # inequalities against interval notation, when the inequalities came as a list ("x<-1 または x>1")
    sets = compare.guarded(lambda: (compare.relations_as_set(gold), compare.relations_as_set(pred)), timeout_s)
    if not sets or sets == (gold, pred):
        return False
    gold_set, pred_set = sets
    return compare.same_value(gold_set, pred_set, timeout_s, set_relation=True)


def _is_interval(parsed: list) -> bool:
    import sympy

    items = compare.sympy_items(parsed)
    return bool(items) and isinstance(items[0], (sympy.Interval, sympy.Union))


def is_correct(output: str, solution: str | list[str], method: str | None = "soft", timeout_s: int | None = 5) -> bool:
    """True when `output` matches the gold `solution` (any one of a list) under `method`."""
    golds = solution if isinstance(solution, (list, tuple)) else [solution]
    method = method or "soft"
    return any(answers_match(str(g), output or "", method, timeout_s) for g in golds if g is not None)


def grade_row(pred_row: dict, gold_row: dict, timeout_s: int | None = 5) -> bool:
    """The grader's verdict for one prediction row (`output`) against its gold row (`solution`, `evaluation_method`)."""
    try:
        return is_correct(pred_row.get("output") or "", gold_row["solution"], gold_row.get("evaluation_method") or "soft", timeout_s)
    except Exception:
        return False


__all__ = ["METHODS", "answer_text", "answers_match", "extract_answer", "extraction_config", "grade_row", "is_correct"]
