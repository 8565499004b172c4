"""Text rewrites behind the grader's fallbacks: each returns the text unchanged when it does not apply.

They run on extracted answer strings (`$...$`), after `clean_text`, and never touch SymPy.
"""
from __future__ import annotations

import itertools
import re
from fractions import Fraction

_DECIMAL = re.compile(r"(?<![\d.])(\d+\.\d+)(?![\d.])")
_KEYWORDS = ("pi", "sin", "cos", "tan", "log", "ln", "exp", "infty", "theta", "alpha", "beta")
_KEYWORD = re.compile(r"(?<![\\A-Za-z])(" + "|".join(_KEYWORDS) + r")(?![A-Za-z])")
_SQRT_CALL = re.compile(r"(?<![\\A-Za-z])sqrt\s*\(([^()]{1,200})\)")
_DEGREES = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°|度)")
# A value may hold braced groups two levels deep (`\frac{1}{2}`); a command name is taken whole,
# since letting `\frac` split into `\fr` + `a` + `c` backtracks exponentially on unclosed text.
_VALUE = r"(?:[^:{},\\]|\\[A-Za-z]+(?![A-Za-z])|\{(?:[^{}]|\{[^{}]{0,40}\}){0,60}\}){1,60}"
_KEY = r"[A-Za-z0-9_]{1,12}"
_DICT = re.compile(rf"(?:\\\{{|\{{)\s*((?:{_KEY}\s*:\s*{_VALUE},\s*)*{_KEY}\s*:\s*{_VALUE})(?:\\\}}|\}})")
_PLUS_MINUS = re.compile(r"\\(pm|mp)(?![A-Za-z])")


def decimals_to_fractions(text: str) -> str:
    """`0.625x` -> `\\frac{5}{8}x`, everywhere (inside `\\frac{}` and function arguments too)."""

    def repl(m: re.Match) -> str:
        frac = Fraction(m.group(1))
        return str(frac.numerator) if frac.denominator == 1 else rf"\frac{{{frac.numerator}}}{{{frac.denominator}}}"

    return _DECIMAL.sub(repl, text)


def keywords_to_latex(text: str) -> str:
    """Bare keywords to LaTeX: `2pi` -> `2\\pi`, `sin(x)` -> `\\sin(x)`, `sqrt(2)` -> `\\sqrt{2}`."""
    text = _SQRT_CALL.sub(r"\\sqrt{\1}", text)
    return _KEYWORD.sub(r"\\\1", text)


def degrees_to_radians(text: str) -> str:
    """`30^\\circ` -> `\\frac{30\\pi}{180}` (the grader converts one direction only: degrees to radians)."""
    return _DEGREES.sub(lambda m: rf"\frac{{{m.group(1)}\pi}}{{180}}", text)


def has_degrees(text: str) -> bool:
    return bool(_DEGREES.search(text))


def swap_brackets(text: str) -> str:
    """`[a, b]` and `\\{a, b\\}` written as `(a, b)`; `\\sqrt[3]{x}` keeps its index bracket."""
    text = re.sub(r"\\sqrt\s*\[([^\[\]]*)\]", lambda m: "\\sqrt\x00" + m.group(1) + "\x01", text)
    text = text.replace(r"\{", "(").replace(r"\}", ")").replace("[", "(").replace("]", ")")
    return text.replace("\x00", "[").replace("\x01", "]")


def dict_to_equations(text: str) -> str:
    """`{x: 1, y: 2}` -> `x = 1, y = 2`; numeric keys (`{1: 3, 2: 5}`) keep their values only."""

    def repl(m: re.Match) -> str:
        pairs = [p.split(":", 1) for p in m.group(1).split(",")]
        keys = [k.strip() for k, _ in pairs]
        if all(re.fullmatch(r"\d+", k) for k in keys):
            return ", ".join(v.strip() for _, v in pairs)
        return ", ".join(f"{k} = {v.strip()}" for k, v in zip(keys, (v for _, v in pairs)))

    return _DICT.sub(repl, text)


def expand_plus_minus(text: str, limit: int = 3) -> str:
    """`a \\pm b` -> `a + b, a - b`; several independent `\\pm` give every combination, `\\mp` follows the `\\pm`."""
    signs = _PLUS_MINUS.findall(text)
    if not signs or len(signs) > limit:
        return text
    inner = text.strip().strip("$")
    linked = "mp" in signs
    combos = [(s,) * len(signs) for s in "+-"] if linked else itertools.product("+-", repeat=len(signs))
    variants = []
    for combo in combos:
        it = iter(zip(signs, combo))

        def repl(_m: re.Match) -> str:
            kind, sign = next(it)
            return sign if kind == "pm" else ("-" if sign == "+" else "+")

        variants.append(_PLUS_MINUS.sub(repl, inner))
    return "$" + ", ".join(variants) + "$"


def decimal_places(text: str) -> int | None:
    """Places of a bare decimal answer (`$-0.333$` -> 3); None when the text is not one decimal."""
    m = re.fullmatch(r"\s*\$?\s*-?\d+\.(\d+)\s*\$?\s*", text)
    return len(m.group(1)) if m else None
