"""LLM-as-judge: one prompt per row, one structured verdict back.

The judge sees the problem, the worked solution and the final answer and replies
with one line of JSON, `{"verdict": "consistent"|"inconsistent"|"ill-posed",
"reason": "..."}`. Two worked example turns show the format, which small models
copy far more reliably than they follow a description of it.

Parsing is lenient about the wrapper and strict about the label: the last JSON
object holding a `verdict` wins (a reasoning model may think out loud first),
then a `Verdict: <label>` line, then a reply that opens with a label. Anything
else is a `judge_error` verdict, never an exception.
"""
from __future__ import annotations

import dataclasses
import json
import re

LABELS = ("consistent", "inconsistent", "ill_posed")

SYSTEM_PROMPT = (
    "You are a strict mathematics teacher checking worked solutions to Japanese school math problems.\n"
    "For each problem, solution and final answer, decide:\n"
    "- consistent: the problem is well-posed and the solution correctly reaches the final answer.\n"
    "- inconsistent: the solution has an error or does not reach the final answer.\n"
    "- ill-posed: the problem is missing information, contradicts itself or has no unique answer.\n"
    'Reply with exactly one line of JSON and nothing else: '
    '{"verdict": "consistent" | "inconsistent" | "ill-posed", "reason": "<short reason>"}'
)

# Worked example turns, one per common label, so the format is shown without
# teaching a single verdict. A weak judge (SmolLM2-135M in the demo) echoes the last
# example's label; "consistent" goes last so such a judge keeps rows rather than
# silently dropping the whole set.
EXAMPLES = (
    (
        {"problem": "方程式 $3x + 5 = 20$ を解きなさい。",
         "solution": "両辺から 5 を引くと $3x = 15$。両辺を 3 で割ると $x = 6$。", "answer": "6"},
        '{"verdict": "inconsistent", "reason": "15 divided by 3 is 5, not 6."}',
    ),
    (
        {"problem": "1 個 120 円のりんごを 4 個買ったときの代金を求めなさい。",
         "solution": "代金は $120 \\times 4 = 480$ 円である。", "answer": "480"},
        '{"verdict": "consistent", "reason": "120 times 4 is 480."}',
    ),
)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The judge's decision on one row; `label` is None when its reply did not parse."""

    label: str | None
    reason: str
    raw: str = ""


def render_row(row: dict, max_solution_chars: int) -> str:
    """The user turn for one row; long solutions keep their head and tail (the answer is at the end)."""
    solution = str(row.get("solution") or "")
    if len(solution) > max_solution_chars:
        half = max_solution_chars // 2
        solution = solution[:half] + "\n[...]\n" + solution[-half:]
    return (
        f"## Problem\n{row.get('problem', '')}\n\n## Solution\n{solution}\n\n"
        f"## Final answer\n{row.get('answer', '')}"
    )


def verdict_conversation(row: dict, max_solution_chars: int = 6000) -> list[dict]:
    conversation = [{"role": "system", "content": SYSTEM_PROMPT}]
    for example, reply in EXAMPLES:
        conversation.append({"role": "user", "content": render_row(example, max_solution_chars)})
        conversation.append({"role": "assistant", "content": reply})
    conversation.append({"role": "user", "content": render_row(row, max_solution_chars)})
    return conversation


_LABEL = r"(inconsistent|consistent|ill[\s_-]?posed)"
_JSON = re.compile(r"\{[^{}]*\}")
_TAGGED = re.compile(r"verdict[\"'*\s]*[:=][\"'*\s]*" + _LABEL, re.I)
_OPENING = re.compile(r"^[\W_]*" + _LABEL + r"\b", re.I)
_REASON = re.compile(r"reason[\"'*\s]*[:=][\"'*\s]*([^\n\"]+)", re.I)


def _label(word: str) -> str | None:
    word = re.sub(r"[\s_-]+", "_", word.strip().lower())
    if word == "illposed":
        word = "ill_posed"
    return word if word in LABELS else None


def parse_verdict(text: str) -> Verdict:
    """Read a verdict out of the judge's reply (see the module docstring for the order tried)."""
    for block in reversed(_JSON.findall(text)):
        try:
            data = json.loads(block)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and isinstance(data.get("verdict"), str):
            label = _label(data["verdict"])
            if label:
                return Verdict(label, str(data.get("reason", "")).strip()[:300], text)
    tagged = _TAGGED.findall(text)
    opening = _OPENING.match(text.strip())
    word = tagged[-1] if tagged else (opening.group(1) if opening else None)
    if word:
        reasons = _REASON.findall(text)
        return Verdict(_label(word), reasons[-1].strip()[:300] if reasons else "", text)
    return Verdict(None, f"unparseable judge reply: {text.strip()[:120]!r}", text)


def judge_rows(engine, rows: list[dict], sampling, max_solution_chars: int = 6000,
               template_kwargs: dict | None = None) -> list[Verdict]:
    """One batched `engine.chat` call over every row; one verdict per row, in order."""
    if not rows:
        return []
    conversations = [verdict_conversation(r, max_solution_chars) for r in rows]
    outputs = engine.chat(conversations, sampling, **(template_kwargs or {}))
    return [parse_verdict(samples[0].text if samples else "") for samples in outputs]
