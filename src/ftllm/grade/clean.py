"""The grader's text handling before any parsing (grader.md §3, §4): cleaning, delimiters, noise.

Plain string work, no SymPy: every pattern is linear in the text, so hostile output cannot hang here.

    clean_prediction("<think>x</think> 0. 4")  ->  "x 0.4"
    strip_noise("答：\\sqrt{5}")                ->  "\\sqrt{5}"
"""
from __future__ import annotations

import re

from ftllm.io import strip_controls

# §3.1: `<`, optional `/`, a letter, name characters, optionally one whitespace and anything but `>`, `>`.
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9_-]*(?:\s[^>]*)?>")
# §3.2 (a) after a digit not itself after `_`, before a digit or `.`; (b) after `.`, before a digit.
_DIGIT_SPACE = re.compile(r"(?<=\d)(?<!_\d)\s+(?=[\d.])|(?<=\.)\s+(?=\d)")
# §4.2: the delimiters whose presence stops the `$…$` wrap.
_DELIMITER = re.compile(r"(?<!\\)(?:\$\$|\\\[|\\\]|\\\(|\\\))|(?<![\\\d])\$|\\boxed\{")
# §4.3: noise is everything but `$`, `\`, ASCII letters and digits, `(`, `{`, `[`, `-`, `+`.
_NOISE_CHAR = r"[^$\\A-Za-z0-9({\[\-+]"
_OPENER_NOISE = re.compile(r"(\$\$|\$|\\\[|\\\()" + _NOISE_CHAR + r"+(.+)")
_LEADING_NOISE = re.compile(_NOISE_CHAR + "+")


def clean_prediction(text: str) -> str:
    """§3: tags out, then spaces inside numbers joined (prediction only; the gold is never cleaned)."""
    if not isinstance(text, str):
        raise TypeError(f"output must be a string, got {type(text).__name__}")
    # control characters first (not in the spec, which never meets them): a NUL inside \boxed{1\x00 2} would
    # otherwise split the answer and let the parser read the last number alone
    return _DIGIT_SPACE.sub("", _TAG.sub("", strip_controls(text)))


def has_delimiter(text: str) -> bool:
    return _DELIMITER.search(text) is not None


def strip_noise(text: str) -> str:
    """§4.3: the text without leading noise; inside an opening delimiter only the first line is kept."""
    m = _OPENER_NOISE.match(text)
    if m:
        return m.group(1) + m.group(2)
    lead = _LEADING_NOISE.match(text)
    return text[lead.end():] if lead else text


def boxed_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each `\\boxed{...}` content, braces balanced; unbalanced boxes are skipped."""
    spans = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            spans.append((m.end(), i - 1))
    return spans


def max_depth(text: str) -> int:
    """Deepest nesting of (), [] and {} (unbalanced closers are ignored)."""
    depth = deepest = 0
    for ch in text:
        if ch in "({[":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")}]" and depth:
            depth -= 1
    return deepest


def looks_pathological(text: str, max_nesting: int = 12, max_box_chars: int = 600) -> bool:
    """Answers no school-math solution writes (very deep nesting, an essay in a box): skipped while voting.

    The official grader would spend its whole timeout on such text; a vote treats it as unparseable at once.
    """
    if max_depth(text) > max_nesting:
        return True
    return any(end - start > max_box_chars for start, end in boxed_spans(text))
