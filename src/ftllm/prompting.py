"""The one prompt contract: how a math problem becomes the chat the model sees.

sft (training conversations), rl (GRPO prompts and the pass-rate filter) and predict (the
competition's inference) all build their conversation here, from the one top-level `prompt`
params section, so the final model is graded under the prompt it was trained on.

    spec = PromptSpec()                      # the `prompt` section
    messages = build_conversation(row, spec) # [system?, user]
    tokenizer.apply_chat_template(messages, add_generation_prompt=True, **spec.chat_template_kwargs)

The default is what the competition's inference sends: a Japanese system prompt asking for the
final answer alone in \\boxed{}, and the bare problem as the user turn.
"""
from __future__ import annotations

import dataclasses
import re

SYSTEM_PROMPT = "あなたは日本の中学・高校数学の問題を解く専門家です。"
ANSWER_INSTRUCTION = "順を追って考え、最後に最終的な答えだけを \\boxed{} の中に書いてください。"
# fields an eval problem may lack; they render empty rather than as a literal placeholder
OPTIONAL_FIELDS = ("category", "unit")


@dataclasses.dataclass(frozen=True)
class PromptSpec:
    """The `prompt` params section (shared by sft, rl and predict)."""

    system_prompt: str | None = SYSTEM_PROMPT  # null: no system turn (templates that reject one)
    # {key} is any field of the row (problem, and category / unit where rows carry them); other braces
    # (LaTeX, \\boxed{}) stay as written
    user_template: str = "{problem}"
    # how to answer; appended to the system turn, or ends the user turn (after a blank line) without one
    answer_instruction: str | None = ANSWER_INSTRUCTION
    chat_template_kwargs: dict = dataclasses.field(default_factory=dict)  # e.g. {reasoning_effort: high}

    def __post_init__(self) -> None:
        if "{problem}" not in self.user_template:
            raise ValueError("prompt.user_template must contain {problem}")


def fill_template(template: str, row: dict) -> str:
    """Replace {key} by row[key]; braces that name no field (\\boxed{}) are left as written."""

    def field(match: re.Match) -> str:
        key = match.group(1)
        if key in row:
            return str(row[key])
        return "" if key in OPTIONAL_FIELDS else match.group(0)

    return re.sub(r"\{(\w+)\}", field, template)


def build_conversation(row: dict, spec: PromptSpec) -> list[dict]:
    """[system (optional), user] for one problem row, as every stage sends it."""
    user = fill_template(spec.user_template, row)
    system = spec.system_prompt
    if spec.answer_instruction:
        if system:
            system = f"{system}{spec.answer_instruction}"
        else:
            user = f"{user}\n\n{spec.answer_instruction}"
    chat = [{"role": "system", "content": system}] if system else []
    return chat + [{"role": "user", "content": user}]
