"""Text rewrites of the grader: the extended parse's steps (grader.md §6.1-6.11) and the soft/strict fallbacks
(§7.4-7.12, §11). Each returns the text unchanged when it does not apply; none touches SymPy.

    ep_text("$x \\geqq 1 \\text{ or } x < 0$")   ->  "$x \\geq 1 , x < 0$"
    degrees_to_radians("$120^\\circ$")           ->  "$120\\cdot\\frac{\\pi}{180}$"
"""
from __future__ import annotations

import re

# --- §6: the extended parse, steps 1-11 ------------------------------------------------------

_OUTER_PAIR = re.compile(r"^(\$\$?)\s*\\[(\[]\s*(.*?)\s*\\[)\]]\s*(\$\$?)$", re.S)
_STYLE = re.compile(r"\\(?:display|text|script|scriptscript)style(?:\s|(?=[\\{]))")
_PROBABILITY = re.compile(r"P\s*\(\s*([A-Za-z])\s*=\s*([^)]+?)\s*\)")
_VECTOR_CMD = re.compile(r"\\(?:vec|overrightarrow|boldsymbol|mathbf|bm)\s*(?:\{([^}]*)\}|([A-Za-z]))")
_ARROW_LETTER = re.compile("([A-Za-z])[\u20d7\u20d1]")
_ARROW = re.compile("[\u20d7\u20d1]")
_SINGLE_VEC = re.compile(r"\\vec\{([A-Za-z])\}")
_SIZING = re.compile(r"\\[bB]igg?[lr]|\\left|\\right|\\middle")
_SPACING = re.compile(r"\\qquad|\\quad|\\[,;:!]|(?<!\\)\\ ")
_CLOSE = r"(?:\$\$|(?<!\$)\$(?!\$)|\\\]|\\\))"
_OPEN = r"(?:\$\$|(?<!\$)\$(?!\$)|\\\[|\\\()"
_WORD_BRACES = r"\\(?:text|mathrm|textbf|textit)\{\s*(?:または|かつ|[Oo][Rr]|[Aa][Nn][Dd])\s*\}"
_SEPARATOR = r"(?:[.,、，;]|または|かつ|[Oo][Rr]|[Aa][Nn][Dd]|" + _WORD_BRACES + ")"
_MERGE = re.compile(_CLOSE + r"\s*" + _SEPARATOR + r"?\s*" + _OPEN)
_DOUBLE_BAR = (
    ("\\gneqq", "\\gneq"), ("\\lneqq", "\\lneq"), ("\\geqq", "\\geq"), ("\\leqq", "\\leq"), ("\\neqq", "\\neq"),
)
_CONNECTIVE = re.compile(r"\\(?:vee|lor|wedge|land)(?![A-Za-z])|" + _WORD_BRACES + r"|\b(?:or|and)\b", re.I)
_DOUBLE_COMMA = re.compile(r",\s*,")


def ep_text(s: str, upto: int = 11) -> str:
    """§6 steps 1..`upto` on `s` (the bracket swap of §7.4 starts from step 5's result)."""
    s = s.replace("\n", " ").replace("\\varnothing", "\\emptyset")
    s = _OUTER_PAIR.sub(r"\1\2\3", s)
    s = _STYLE.sub("", s)
    s = _PROBABILITY.sub(r"p_{\1\2}", s)
    if upto <= 5:
        return s
    s = unify_vectors(s)
    s = _SINGLE_VEC.sub(r"\1", s)
    s = _SIZING.sub("", s)
    s = _SPACING.sub(" ", s)
    s = _MERGE.sub(", ", s)
    for old, new in _DOUBLE_BAR:
        s = s.replace(old, new)
    s = _CONNECTIVE.sub(",", s)
    return _DOUBLE_COMMA.sub(",", s)


def unify_vectors(s: str) -> str:
    """Every vector spelling as `\\vec{…}` (arrows on single letters are not dropped here)."""
    s = _VECTOR_CMD.sub(lambda m: "\\vec{" + (m.group(1) if m.group(1) is not None else m.group(2)) + "}", s)
    return _ARROW.sub("", _ARROW_LETTER.sub(r"\\vec{\1}", s))


# --- §7.4-7.5: one bracket kind ------------------------------------------------------------

_BRACKET = re.compile(r"(\\sqrt\s*\[[^\]]*\]|\\[\[\]()])|(\\\{|[(\[])|(\\\}|[)\]])")
_KINDS = (("(", ")"), ("[", "]"), ("\\{", "\\}"))


def bracket_variants(s: str) -> list[str]:
    """Up to three copies of `s` with every bracket of one kind; `\\[ \\] \\( \\)` and `\\sqrt[n]` kept."""
    out = []
    for left, right in _KINDS:
        variant = _BRACKET.sub(lambda m, left=left, right=right: m.group(1) or (left if m.group(2) else right), s)
        if variant != s and variant not in out:
            out.append(variant)
    return out


# --- §7.6: \log without a base read as \ln ---------------------------------------------------

_BASELESS_LOG = re.compile(r"\\log(?![_A-Za-z])")


def log_as_ln(s: str) -> str:
    return _BASELESS_LOG.sub(lambda m: "\\ln", s)


def has_baseless_log(s: str) -> bool:
    return _BASELESS_LOG.search(s) is not None


# --- §11.2: dict-like answers ----------------------------------------------------------------

_OUTER_MATH = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"))
_NUMERIC_KEY = re.compile(r"-?\d+")


def dict_candidate(s: str) -> str | None:
    """`a: 2, b: -5` -> `$a = 2, b = -5$`; numeric keys keep only the values; None when not dict-like."""
    s = s.strip()
    for left, right in _OUTER_MATH:
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left) : -len(right)]
            break
    else:
        if len(s) >= 2 and s.startswith("$") and s.endswith("$"):
            s = s[1:-1]
    s = _strip_wrapper(s.strip(), "\\boxed{", "}")
    s = _strip_wrapper(_strip_wrapper(s, "\\{", "\\}"), "{", "}")
    pairs = []
    for part in _split_top(s, "{", "}"):
        key, colon, value = part.partition(":")
        if not colon or not key.strip() or not value.strip():
            return None
        pairs.append((key.strip(), value.strip()))
    if len(pairs) < 2:
        return None
    if all(_NUMERIC_KEY.fullmatch(k.replace(".", "")) for k, _ in pairs):
        return "$" + ", ".join(v for _, v in pairs) + "$"
    return "$" + ", ".join(f"{k} = {v}" for k, v in pairs) + "$"


def _strip_wrapper(s: str, left: str, right: str) -> str:
    """`s` without an outer `left…right` when that pair encloses the whole text."""
    if not (s.startswith(left) and s.endswith(right)) or len(s) < len(left) + len(right):
        return s
    inner = s[len(left) : len(s) - len(right)]
    depth = 0
    for ch in inner:  # `{a}: 1, {b}` must not lose its first and last brace
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return s
    return inner if depth == 0 else s


def _split_top(s: str, opens: str, closes: str) -> list[str]:
    """`s` split at commas outside the given bracket characters."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in opens:
            depth += 1
        elif ch in closes:
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def split_top_level(s: str) -> list[str]:
    """Split at commas outside `( { [` (the tuple re-read of §6.12)."""
    return _split_top(s, "({[", ")}]")


# --- §11.7: vector names ----------------------------------------------------------------------

_VEC_NAME = re.compile(r"\\vec\{([^}]*)\}")
_VECTOR_MARK = re.compile(r"\\(?:vec|overrightarrow|boldsymbol|mathbf|bm)(?![A-Za-z])|[\u20d7\u20d1]")


def has_vector_mark(s: str) -> bool:
    return _VECTOR_MARK.search(s) is not None


def vector_names(pred: str, gold: str) -> tuple[str, str] | None:
    """§11.7: bare names written as vectors on the other side get the arrow; None when no side has one."""
    if not (has_vector_mark(pred) or has_vector_mark(gold)):
        return None
    pred, gold = unify_vectors(pred), unify_vectors(gold)
    pred_names, gold_names = set(_VEC_NAME.findall(pred)), set(_VEC_NAME.findall(gold))
    for name in sorted(pred_names | gold_names, key=lambda n: (-len(n), n)):
        if not name:
            continue
        bare = re.compile(r"(?<!\\vec\{)(?<![A-Za-z\\])" + re.escape(name) + r"(?![A-Za-z])")
        if name in gold_names:
            pred = bare.sub(lambda m, name=name: "\\vec{" + name + "}", pred)
        if name in pred_names:
            gold = bare.sub(lambda m, name=name: "\\vec{" + name + "}", gold)
    return _SINGLE_VEC.sub(r"\1", pred), _SINGLE_VEC.sub(r"\1", gold)


# --- §11.1: degrees ----------------------------------------------------------------------------

_DEGREE = re.compile(r"\^\\circ|\^\{\\circ\}|°")


def has_degree_mark(s: str) -> bool:
    return _DEGREE.search(s) is not None


def degrees_to_radians(s: str) -> str:
    return _DEGREE.sub(lambda m: "\\cdot\\frac{\\pi}{180}", s)


# --- §7.10-7.12: decimals and bare keywords ---------------------------------------------------

DECIMAL = re.compile(r"-?\d+\.\d+")
_WHOLE_DECIMAL = re.compile(r"(?<![\d.])(\d+)\.(\d+)(?!\d)")
_KEYWORD = re.compile(r"(?<![A-Za-z\\])(sqrt|sin|cos|tan|log|exp|pi|ln)(?![A-Za-z])")


def decimals_to_fractions(s: str) -> str:
    """`0.75` -> `\\frac{75}{100}`: all the digits over a power of ten, not reduced."""
    return _WHOLE_DECIMAL.sub(_decimal_as_fraction, s)


def _decimal_as_fraction(m: re.Match) -> str:
    numerator, denominator = int(m.group(1) + m.group(2)), 10 ** len(m.group(2))
    return f"\\frac{{{numerator}}}{{{denominator}}}"


def keywords_to_latex(s: str) -> str:
    """`3pi` -> `3\\pi`, `cos(pi/4)` -> `\\cos(\\pi/4)`; `spin`, `sinx` untouched."""
    return _KEYWORD.sub(r"\\\1", s)
