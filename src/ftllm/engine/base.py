"""The engine contract shared by every backend."""
from __future__ import annotations

import abc
import dataclasses
from typing import Callable, Sequence

from ftllm.config import EngineSpec, SamplingSpec

Conversation = Sequence[dict]


@dataclasses.dataclass
class Completion:
    """One sampled continuation."""

    text: str
    num_tokens: int
    cumulative_logprob: float | None = None  # sum of the sampled tokens' log-probabilities
    finish_reason: str = "stop"  # stop | length
    token_ids: list[int] | None = None  # the sampled tokens, when the backend reports them (for `score_ids`)


# Called with (prompt token ids, that prompt's completions) as soon as they are all done, in finishing
# order: work on early finishers (parsing and voting their answers) overlaps generation of the rest.
OnFinished = Callable[[list[int], list[Completion]], None]


def render_chat(tokenizer, conversation: Conversation, chat_template: str | None = None, **template_kwargs) -> list[int]:
    """Token ids of `conversation` under the model's chat template, ready for the assistant turn."""
    ids = tokenizer.apply_chat_template(
        list(conversation),
        add_generation_prompt=True,
        tokenize=True,
        chat_template=chat_template,
        return_dict=False,
        **template_kwargs,
    )
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return [int(t) for t in ids]


class Engine(abc.ABC):
    """Backends implement `generate_ids` (and, if they can, `score_ids`); `chat` and `generate` are shared."""

    spec: EngineSpec
    tokenizer = None

    @abc.abstractmethod
    def generate_ids(
        self, prompts: list[list[int]], sampling: SamplingSpec, on_finished: OnFinished | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Completion]]:
        """`n` completions for each token-id prompt; `on_finished` sees each prompt's as soon as they are done.

        `seeds`: one per prompt. Prompt i's samples then depend on seeds[i] (and the sample index)
        only, never on which other prompts share its batch or in what order they finish.
        """

    def score_ids(self, prompts: list[list[int]], continuations: list[list[int]]) -> list[float | None]:
        """Summed log-probability of each continuation after its prompt (one prefill, no sampling).

        None where the backend cannot tell. Voting asks for it only to break ties, so sampling
        need not pay for per-token log-probabilities on every sample.
        """
        return [None] * len(prompts)

    def render_chats(self, conversations: Sequence[Conversation], **template_kwargs) -> list[list[int]]:
        """Token ids of each conversation under the model's (or the configured) chat template."""
        template = None
        if self.spec.chat_template:
            with open(self.spec.chat_template, encoding="utf-8") as f:
                template = f.read()
        return [render_chat(self.tokenizer, c, template, **template_kwargs) for c in conversations]

    def generate(self, prompts: Sequence[str], sampling: SamplingSpec,
                 seeds: Sequence[int] | None = None) -> list[list[Completion]]:
        """Raw text prompts (no chat template); `n` completions for each."""
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        return self.generate_ids(ids, sampling, seeds=seeds) if seeds is not None else self.generate_ids(ids, sampling)

    def chat(
        self, conversations: Sequence[Conversation], sampling: SamplingSpec, seeds: Sequence[int] | None = None,
        **template_kwargs,
    ) -> list[list[Completion]]:
        """Chat conversations rendered with the model's template; `n` completions for each."""
        ids = self.render_chats(conversations, **template_kwargs)
        return self.generate_ids(ids, sampling, seeds=seeds) if seeds is not None else self.generate_ids(ids, sampling)

    def close(self) -> None:
        """Release the model (GPU memory, worker processes)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
