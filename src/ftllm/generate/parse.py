"""Split teacher text into reasoning / problem / solution / answer, or say why it cannot be.

Two reply shapes arrive here:
- harmony (GPT-OSS, `skip_special_tokens: false`):
  `<|channel|>analysis<|message|>…<|end|><|start|>assistant<|channel|>final<|message|>…`;
  analysis messages are the reasoning, the last final message is the reply.
- plain chat models (SmolLM2, the tiny test model): the reply itself, with optional
  `<think>…</think>` reasoning in front.
The reply must hold `<problem>`, `<solution>` and `<answer>` in that order. Every
failure has a short reason string; the caller stores it with the raw text.
"""
from __future__ import annotations

import dataclasses
import re

_HARMONY_MESSAGE = re.compile(
    r"<\|channel\|>(?P<channel>[a-z]+)(?P<header>[^<]*(?:<\|constrain\|>[^<]*)?)<\|message\|>"
    r"(?P<body>.*?)(?=<\|end\|>|<\|return\|>|<\|call\|>|<\|start\|>|$)",
    re.DOTALL,
)
_SPECIAL = re.compile(r"<\|[a-z_]+\|>")
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_PYTHON = re.compile(r"```\s*(?:python|py)\b|^\s*(?:import \w|from \w+ import |print\()", re.IGNORECASE | re.MULTILINE)
_BOXED = "\\boxed{"
MIN_PROBLEM_CHARS = 8  # shorter "problems" are the format's placeholder echoed back, not problems
COPY_SIMILARITY = 0.8  # small teachers echo the one-shot example with a word changed


@dataclasses.dataclass(frozen=True)
class Parsed:
    reasoning: str
    problem: str
    solution: str
    answer: str
    uses_python: bool


class ParseFailure(ValueError):
    """The text does not give a usable row; `reason` is a short key counted in metrics."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def split_reasoning(raw: str) -> tuple[str, str]:
    """(reasoning, reply) for harmony or plain text."""
    if "<|channel|>" in raw:
        return _split_harmony(raw)
    think = _THINK.search(raw)
    if think:
        reply = raw[: think.start()] + raw[think.end() :]
        return think.group(1).strip(), _cut_special(reply)
    if "<think>" in raw:
        raise ParseFailure("unclosed_think")
    return "", _cut_special(raw)


def _split_harmony(raw: str) -> tuple[str, str]:
    analysis, finals, tool_call = [], [], False
    for match in _HARMONY_MESSAGE.finditer(raw):
        channel, header = match.group("channel"), match.group("header")
        if channel == "final":
            finals.append(match.group("body"))
        elif channel == "analysis":
            analysis.append(match.group("body").strip())
        if "to=" in header:
            tool_call = True  # teacher tried to call a tool; we declared none and never run code
    if not finals:
        raise ParseFailure("tool_call" if tool_call else "no_final_channel")
    return "\n\n".join(a for a in analysis if a), finals[-1].strip()


def _cut_special(text: str) -> str:
    """Plain replies end at the first special token (a model running on past its turn)."""
    match = _SPECIAL.search(text)
    return (text[: match.start()] if match else text).strip()


_ANY_TAG = re.compile(r"</?(?:problem|solution|answer)>", re.IGNORECASE)


def _section(text: str, name: str, start: int, open_end: bool = False) -> tuple[str, int]:
    """Content of the first <name> at or after `start`, up to the next section tag, and where to go on.

    The section ends at its own closing tag or at any other section tag, so a small model
    that forgets `</problem>` before `<solution>` still parses; order is enforced by `start`.
    """
    opened = re.compile(rf"<{name}>", re.IGNORECASE).search(text, start)
    if not opened:
        raise ParseFailure(f"missing_{name}")
    closing = _ANY_TAG.search(text, opened.end())
    if closing is None:
        if open_end:  # a stop string of "</answer>" (or EOS right after the answer) leaves it open
            return text[opened.end() :].strip(), len(text)
        raise ParseFailure(f"unclosed_{name}")
    own_close = closing.group(0).lower() == f"</{name}>"
    return text[opened.end() : closing.start()].strip(), closing.end() if own_close else closing.start()


def clean_answer(answer: str) -> str:
    """Strip math delimiters and keep the inside of a \\boxed{…} if the teacher boxed it."""
    answer = answer.strip()
    if _BOXED in answer:
        inner = _boxed_content(answer)
        if inner is not None:
            answer = inner
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if answer.startswith(left) and answer.endswith(right) and len(answer) > len(left) + len(right):
            answer = answer[len(left) : -len(right)].strip()
            break
    return answer.rstrip("。.").strip()


def _boxed_content(text: str) -> str | None:
    start = text.rindex(_BOXED) + len(_BOXED)
    depth = 1
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i].strip()
    return None


def uses_python(text: str) -> bool:
    return bool(_PYTHON.search(text))


def _normalise(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def _is_copy(problem: str, example: str) -> bool:
    import difflib

    a, b = _normalise(problem), _normalise(example)
    return a == b or difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= COPY_SIMILARITY


def parse_teacher_text(
    raw: str,
    finish_reason: str = "stop",
    tool_use: bool = True,
    example_problem: str | None = None,
    max_answer_chars: int = 200,
) -> Parsed:
    """Parse one completion; raises ParseFailure(reason) when it gives no usable row."""
    try:
        reasoning, reply = split_reasoning(raw)
        problem, end = _section(reply, "problem", 0)
        solution, end = _section(reply, "solution", end)
        answer, _ = _section(reply, "answer", end, open_end=finish_reason == "stop")
    except ParseFailure:
        if finish_reason == "length":
            raise ParseFailure("truncated") from None
        raise
    answer = clean_answer(answer)
    if not problem:
        raise ParseFailure("empty_problem")
    if len(problem) < MIN_PROBLEM_CHARS:
        raise ParseFailure("problem_too_short")
    if not solution:
        raise ParseFailure("empty_solution")
    if not answer:
        raise ParseFailure("empty_answer")
    if len(answer) > max_answer_chars:
        raise ParseFailure("answer_too_long")
    if example_problem and _is_copy(problem, example_problem):
        raise ParseFailure("copied_example")
    python = uses_python(solution)
    if python and not tool_use:
        raise ParseFailure("python_forbidden")
    return Parsed(reasoning, problem, solution, answer, python)
