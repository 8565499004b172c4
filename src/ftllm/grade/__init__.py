"""Our copy of the official grader `math-eval`: the verdict of one prediction against one gold row.

Follows ../shared/reference/grader.md step by step (section numbers below are its own):
the prediction is cleaned once (§3, `clean.py`); each gold string gets up to four attempts on the prediction
(§4: as is, wrapped in `$…$`, noise stripped, noise stripped and wrapped); each attempt runs the method (§5):

- `soft` (default): Math-Verify's verify, then the fallbacks of §7 in their order;
- `strict`: the same SymPy tree (srepr), then decimal rounding, decimal->fraction and bare keywords (§8);
- `complex`: `i` is the imaginary unit, verify then SymPy's numeric identity, else soft (§9);
- `complex-strict`: complex and strict on the same attempt.

Both sides go through the extended parse (§6, `rewrite.ep_text` + `compare.extended_parse`); the gold is
never cleaned or wrapped. Quirks that change verdicts are kept on purpose, false positives included:
we want the official verdict, not a better one.

    is_correct("答え：\\boxed{\\frac{1}{2}}", "$0.5$")       # True
    is_correct("$120^\\circ$", "$\\frac{2\\pi}{3}$")          # True (soft only)
    grade_row({"id": 1, "output": "x = 7"}, {"id": 1, "solution": "$t = 7$"})   # True: attempt 1 reads the 7

Bad input the official tool aborts on (an unknown method, a non-string output) raises `GradeInputError`;
any other error makes the row wrong.
"""
from __future__ import annotations

import functools
import re

import sympy

from ftllm.grade import compare, rewrite
from ftllm.grade.clean import clean_prediction, has_delimiter, looks_pathological, strip_noise
from ftllm.grade.compare import extraction_config

METHODS = ("soft", "strict", "complex", "complex-strict")


class GradeInputError(ValueError):
    """Input on which the official grader aborts the whole run (§2.1, §2.2)."""


def check_method(method) -> str:
    """§2.1: missing/null is soft; anything but the four methods aborts."""
    if method is None:
        return "soft"
    if method not in METHODS:
        raise GradeInputError(f"evaluation_method must be one of {', '.join(METHODS)} or null, got {method!r}")
    return method


# --- §4: the attempts -------------------------------------------------------------------------

def attempts(cleaned: str) -> list[str]:
    """The prediction strings tried in order against one gold string (duplicates kept out)."""
    out = [cleaned]
    if not has_delimiter(cleaned):
        out.append("$" + cleaned + "$")
    stripped = strip_noise(cleaned)
    if stripped and stripped != cleaned:
        out.append(stripped)
        if not has_delimiter(stripped):
            out.append("$" + stripped + "$")
    return list(dict.fromkeys(out))


# --- §7: soft ----------------------------------------------------------------------------------

def _ep(s: str, timeout_s):
    return compare.extended_parse(s, timeout_s)


def soft(pred: str, gold: str, timeout_s: int | None = 5) -> bool:
    g, p = _ep(gold, timeout_s), _ep(pred, timeout_s)  # an exception here ends the row (caller)
    return _soft_stages(pred, gold, g, p, timeout_s)


def _soft_stages(pred: str, gold: str, g: list, p: list, timeout_s) -> bool:
    v = lambda a, b: compare.verify(a, b, timeout_s)  # noqa: E731
    if v(g, p) or compare.matrix_tuple(g, p, timeout_s):  # §7.1, §7.2
        return True
    if compare.inequality_atoms(g, p, timeout_s) or compare.inequality_intervals(g, p, timeout_s):  # §7.3
        return True
    for variant in rewrite.bracket_variants(rewrite.ep_text(pred, upto=5)):  # §7.4
        if v(g, _ep(variant, timeout_s)):
            return True
    for variant in rewrite.bracket_variants(rewrite.ep_text(gold, upto=5)):  # §7.5
        if v(_ep(variant, timeout_s), p):
            return True
    if rewrite.has_baseless_log(pred) or rewrite.has_baseless_log(gold):  # §7.6
        g2, p2 = rewrite.log_as_ln(gold), rewrite.log_as_ln(pred)
        if (g2, p2) != (gold, pred) and v(_ep(g2, timeout_s), _ep(p2, timeout_s)):
            return True
    if _dict_like(pred, gold, g, p, timeout_s):  # §7.7
        return True
    names = rewrite.vector_names(pred, gold)  # §7.8
    if names and v(_ep(names[1], timeout_s), _ep(names[0], timeout_s)):
        return True
    if rewrite.has_degree_mark(pred) and v(g, _ep(rewrite.degrees_to_radians(pred), timeout_s)):  # §7.9
        return True
    if rewrite.has_degree_mark(gold) and v(_ep(rewrite.degrees_to_radians(gold), timeout_s), p):
        return True
    return _shared_stages(pred, gold, g, p, timeout_s)  # §7.10-7.12


def _dict_like(pred: str, gold: str, g: list, p: list, timeout_s) -> bool:
    gd, pd = rewrite.dict_candidate(gold), rewrite.dict_candidate(pred)
    v = lambda a, b: compare.verify(a, b, timeout_s)  # noqa: E731
    if gd is not None and v(_ep(gd, timeout_s), p):
        return True
    if pd is not None and v(g, _ep(pd, timeout_s)):
        return True
    return gd is not None and pd is not None and v(_ep(gd, timeout_s), _ep(pd, timeout_s))


def _shared_stages(pred: str, gold: str, g: list, p: list, timeout_s) -> bool:
    """§7.10-7.12 (also §8.3-8.5): value equality once a decimal or a bare keyword is present."""
    if compare.decimal_rounding(g, p, timeout_s):
        return True
    for fn in (rewrite.decimals_to_fractions, rewrite.keywords_to_latex):
        g2, p2 = fn(gold), fn(pred)
        if (g2, p2) != (gold, pred) and compare.verify(_ep(g2, timeout_s), _ep(p2, timeout_s), timeout_s):
            return True
    return False


# --- §8, §9 ----------------------------------------------------------------------------------

def strict(pred: str, gold: str, timeout_s: int | None = 5) -> bool:
    g, p = _ep(gold, timeout_s), _ep(pred, timeout_s)
    return compare.same_tree(g, p, gold, pred, timeout_s) or _shared_stages(pred, gold, g, p, timeout_s)


def complex_(pred: str, gold: str, timeout_s: int | None = 5) -> bool:
    try:
        p0, g0 = _ep(pred, timeout_s)[0], _ep(gold, timeout_s)[0]
    except Exception:
        return soft(pred, gold, timeout_s)
    p0, g0 = compare.with_i(p0), compare.with_i(g0)  # unguarded in the grader: an error ends the row
    return compare.complex_equal(g0, p0, timeout_s) or soft(pred, gold, timeout_s)


def check(pred: str, gold: str, method: str, timeout_s: int | None = 5) -> bool:
    """§5: one attempt string against one gold string."""
    if method == "strict":
        return strict(pred, gold, timeout_s)
    if method == "complex":
        return complex_(pred, gold, timeout_s)
    if method == "complex-strict":
        return complex_(pred, gold, timeout_s) and strict(pred, gold, timeout_s)
    return soft(pred, gold, timeout_s)


# --- §2: rows --------------------------------------------------------------------------------

def is_correct(output: str, solution: str | list, method: str | None = "soft", timeout_s: int | None = 5) -> bool:
    """§2: the verdict of `output` against the gold `solution` (a string or a list tried in order)."""
    method = check_method(method)
    try:
        cleaned = clean_prediction(output)
    except TypeError as err:
        raise GradeInputError(str(err)) from None
    golds = solution if isinstance(solution, list) else [solution]
    try:
        for gold in golds:
            if not isinstance(gold, str):
                return False  # the official parse fails on it: the row is wrong
            if any(check(attempt, gold, method, timeout_s) for attempt in attempts(cleaned)):
                return True
    except Exception:  # §2.4: the row is wrong, later golds untried
        return False
    return False


def grade_row(pred_row: dict, gold_row: dict, timeout_s: int | None = 5) -> bool:
    """The verdict for one prediction row (`output`) against its gold row (`solution`, `evaluation_method`).

    Raises `GradeInputError` where the official tool aborts; a gold row without `solution` is wrong.
    """
    if "solution" not in gold_row:
        return False
    return is_correct(pred_row.get("output"), gold_row["solution"], gold_row.get("evaluation_method"), timeout_s)


def as_gold(answer) -> str:
    """An answer we hold (a teacher's boxed content, a generated solution) as gold the grader can read.

    The official grader never wraps gold (§2.5): bare LaTeX such as `2 \\sqrt{5}` would read as the number 2.
    Our own golds (RL rewards, judge agreement) therefore go inside `$…$` unless already delimited.
    """
    text = str(answer).strip()
    return text if has_delimiter(text) else f"${text}$"


def answers_match(gold_text: str, pred_text: str, method: str = "soft", timeout_s: int | None = 5) -> bool:
    """True when `pred_text` grades correct against `gold_text` under `method` (gold first: not symmetric)."""
    return is_correct(pred_text, gold_text, method, timeout_s)


# --- answers for voting ----------------------------------------------------------------------

_PROSE_WORD = re.compile(r"(?<!\\)\b[A-Za-z]{3,}\b|[\u3040-\u30ff\u4e00-\u9fff]{2,}")


@functools.lru_cache(maxsize=4096)
def extract_answer(text: str, timeout_s: int | None = 5) -> list:
    """The answer the grader reads in model text: EP of the first attempt that parses to math, else [].

    Cached (SymPy objects are immutable; callers must not mutate the returned list).
    """
    try:
        cleaned = clean_prediction(text or "")
    except TypeError:
        return []
    for attempt in attempts(cleaned):
        if attempt.startswith("$") and not has_delimiter(attempt[1:-1]) and _PROSE_WORD.search(attempt):
            continue  # wrapped prose parses to a product of letters: no answer a vote should count
        try:
            parsed = compare.extended_parse(attempt, timeout_s)
        except Exception:
            continue
        if parsed and compare.is_math(parsed[0]):
            return parsed
    return []


def answer_text(text: str, timeout_s: int | None = 5, screen: bool = True) -> str | None:
    """The extracted answer as a `$...$` string (what voting compares and emits); None if nothing parses.

    `screen` skips pathological text (`looks_pathological`) without parsing it: fine for voting,
    where such an answer is never the right one, but not for grading, which must follow the grader.
    """
    if screen and looks_pathological(text or ""):
        return None
    parsed = extract_answer(text, timeout_s)
    if not parsed:
        return None
    matched = parsed[1] if len(parsed) > 1 and isinstance(parsed[1], str) and parsed[1].strip() else None
    if matched is None:
        matched = compare.guarded(lambda: sympy.latex(parsed[0]), timeout_s)
        if not matched:
            return None
    return f"${matched.strip()}$"


# --- equivalence for voting (§4 of issue 14) ---------------------------------------------------

_BARE_KEYWORD = re.compile(r"(?<![A-Za-z\\])(?:sqrt|sin|cos|tan|log|exp|pi|ln)(?![A-Za-z])")


def fallback_signature(answer: str) -> tuple:
    """What of an answer's spelling can change its verdict against some gold beyond its value:
    the one-directional or lenient stages (degree mark §11.1, base-less log §11.5, vector marks §11.7,
    dict-like §11.2, decimals and their places §7.10, bare keywords §7.12, ± §6.12)."""
    places = [len(d.split(".")[1]) for d in rewrite.DECIMAL.findall(answer)]
    return (
        rewrite.has_degree_mark(answer),
        rewrite.has_baseless_log(answer),
        rewrite.has_vector_mark(answer),
        rewrite.dict_candidate(answer) is not None,
        min(places) if places else None,
        _BARE_KEYWORD.search(answer) is not None,
        "\\pm" in answer or "\\mp" in answer,
    )


def equivalent(a: str, b: str, method: str = "soft", timeout_s: int | None = 5) -> bool:
    """Answers a vote may put in one class: each grades correct against the other under `method`, and
    neither spelling carries a fallback trigger the other lacks (`fallback_signature`).

    The grader is one-directional (`$120^\\circ$` matches `$120$` both ways, yet only the first matches
    `$\\frac{2\\pi}{3}$`); the signature keeps such pairs apart.
    """
    if fallback_signature(a) != fallback_signature(b):
        return False
    return answers_match(a, b, method, timeout_s) and answers_match(b, a, method, timeout_s)


__all__ = ["METHODS", "GradeInputError", "answer_text", "as_gold", "answers_match", "attempts", "check", "check_method",
           "equivalent", "extract_answer", "extraction_config", "fallback_signature", "grade_row", "is_correct"]
