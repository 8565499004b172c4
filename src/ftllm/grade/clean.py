"""Text normalisation applied before an answer is parsed, mirroring the official grader.

Everything here is plain string rewriting (no SymPy), so it is cheap and cannot hang:
the regular expressions avoid nested quantifiers on purpose.

    clean_text("答え：$x \\geqq 1$ または $x \\leqq -1$")  ->  "答え：$x \\geq 1, x \\leq -1$"
"""
from __future__ import annotations

import re

# XML/HTML tags such as <think>, </answer>, <br/>; the grader strips them before extraction.
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9_:-]{0,30}(?:\s[^<>\n]{0,200})?/?>")
# Digit grouping: "1 000 000" -> "1000000" (only groups of exactly three digits, so "(1 2)" survives).
_DIGIT_GROUP = re.compile(r"(?<=\d)[ \u00a0\u202f](?=\d{3}(?!\d))")

_DOUBLE_BAR = [
    (r"\geqq", r"\geq"), (r"\leqq", r"\leq"), (r"\geqslant", r"\geq"), (r"\leqslant", r"\leq"),
    ("≧", r"\geq "), ("≦", r"\leq "), ("≥", r"\geq "), ("≤", r"\leq "),
]
# Spacing commands and bracket sizing carry no meaning but confuse the LaTeX parser. A row break `\\`
# is matched (and kept) first, so the `\ ` in `1 \\ 2` is not read as a spacing command.
_ROW_BREAK = r"(\\\\)|"
_SIZING = re.compile(_ROW_BREAK + r"\\(?:left|right|middle|[bB]igg?[lrm]?)(?![A-Za-z])\s*(?:\.(?![0-9]))?")
_SPACING = re.compile(
    _ROW_BREAK
    + r"\\(?:(?:displaystyle|textstyle|scriptstyle|quad|qquad|(?:neg)?(?:thin|med|thick)space|enspace)(?![A-Za-z])"
    r"|[,;:!> ])|\\hspace\*?\{[^{}]*\}|~"
)
_OR = re.compile(
    r"\\(?:vee|lor)(?![A-Za-z])|\\(?:text|mathrm)\{\s*(?:または|又は|もしくは|or|OR)\s*\}|(?<![A-Za-z])or(?![A-Za-z])|または"
)
# Vector notations: \overrightarrow{AB}, \vec{a}, \boldsymbol{a}, \mathbf{F}, \bm{v}, \vec a.
_VECTOR = re.compile(r"\\(?:overrightarrow|vec|boldsymbol|mathbf|bm)\s*(?:\{\s*([A-Za-z]{1,4})\s*\}|([A-Za-z]))")
_COMBINING_ARROW = re.compile(r"([A-Za-z]{1,4})\u20d7")
# P(X=2) = 1/3 -> 1/3: the probability's argument is not the answer.
_PROBABILITY = re.compile(r"(?<![A-Za-z\\])P\s*\(\s*[^()=]{0,20}(?:=|\\geq|\\leq|<|>)[^()]{0,20}\)\s*=")
_MATH_BLOCK = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.S)
# What may stand between two math blocks that answer together ("$a$ または $b$", "$a$, $b$").
_JOINER = re.compile(r"\s*(?:,|、|，|;|and|or|または|又は|もしくは|および|及び|かつ|と|,?\s*\\text\{[^{}]{0,12}\})?\s*")
_NOISE = re.compile(r"^\s*(?:。|、|：|:|答え?\s*[：:は]?|解答\s*[：:]?|Answer\s*[：:]?|よって|したがって|ゆえに)\s*")
_DELIMITED = re.compile(r"\$|\\\(|\\\[|\\boxed|\\fbox")
_PROSE_WORD = re.compile(r"(?<!\\)\b[A-Za-z]{3,}\b|[\u3040-\u30ff\u4e00-\u9fff]{2,}")


def clean_text(text: str) -> str:
    """The grader's pre-cleaning of a prediction (or a gold solution) before parsing."""
    text = _TAG.sub("", text or "")
    for old, new in _DOUBLE_BAR:
        text = text.replace(old, new)
    text = _SIZING.sub(lambda m: m.group(1) or "", text)
    text = _SPACING.sub(lambda m: m.group(1) or " ", text)
    text = _DIGIT_GROUP.sub("", text)  # after spacing, so "1\,000" joins too
    text = unify_vectors(text)
    text = _PROBABILITY.sub("", text)
    text = flatten_boxed(text)
    text = join_math_blocks(text)
    text = _OR.sub(",", text)
    return wrap_bare(text.strip())


def unify_vectors(text: str) -> str:
    """Every vector notation to one form: single letters to the letter, longer names kept whole."""

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        return name if len(name) == 1 else rf"\overrightarrow{{{name}}}"

    text = _COMBINING_ARROW.sub(lambda m: m.group(1) if len(m.group(1)) == 1 else rf"\overrightarrow{{{m.group(1)}}}", text)
    return _VECTOR.sub(repl, text)


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


def flatten_boxed(text: str) -> str:
    """Math delimiters nested inside a box (`\\boxed{$3$}`) are dropped: the box already is math."""
    out, last = [], 0
    for start, end in boxed_spans(text):
        if start < last:  # a box inside a box: the outer one already flattened it
            continue
        inner = re.sub(r"\$|\\\(|\\\)|\\\[|\\\]", "", text[start:end])
        out += [text[last:start], inner]
        last = end
    out.append(text[last:])
    return "".join(out)


def join_math_blocks(text: str) -> str:
    """`$a$ または $b$` -> `$a, b$`: the extractor reads only the last block, so answers split over blocks are joined."""
    blocks = list(_MATH_BLOCK.finditer(text))
    if len(blocks) < 2:
        return text
    out, i = [], 0
    pos = 0
    while i < len(blocks):
        j = i
        parts = [_block_body(blocks[i])]
        while j + 1 < len(blocks) and _JOINER.fullmatch(text[blocks[j].end() : blocks[j + 1].start()]):
            j += 1
            parts.append(_block_body(blocks[j]))
        out.append(text[pos : blocks[i].start()])
        out.append(blocks[i].group(0) if j == i else "$" + ", ".join(p.strip() for p in parts) + "$")
        pos = blocks[j].end()
        i = j + 1
    out.append(text[pos:])
    return "".join(out)


def _block_body(m: re.Match) -> str:
    return next(g for g in m.groups() if g is not None)


def wrap_bare(text: str) -> str:
    """An expression without delimiters is wrapped in `$...$` so `\\sqrt{2}` parses as LaTeX; prose is left alone."""
    if not text or _DELIMITED.search(text):
        return text
    if "\\" in text or not _PROSE_WORD.search(text):
        return f"${text}$"
    return text


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
    """Answers no school-math solution writes (very deep nesting, an essay in a box): skip them while voting.

    The official grader would spend its whole timeout on such text; a vote treats it as unparseable at once.
    """
    if max_depth(text) > max_nesting:
        return True
    return any(end - start > max_box_chars for start, end in boxed_spans(text))


def drop_noise(text: str) -> str:
    """Second-try cleaning: a leading noise token (`。`, `答え：`) at the start of the text and of each box/block."""
    text = _NOISE.sub("", text)
    text = re.sub(r"(\\boxed\s*\{|\$)\s*(?:。|答え?\s*[：:]|解答\s*[：:]|Answer\s*[：:])\s*", r"\1", text)
    return wrap_bare(text)
