"""The engine contract shared by every backend."""
from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Callable, Sequence

from ftllm.config import EngineSpec, SamplingSpec

Conversation = Sequence[dict]
log = logging.getLogger(__name__)

# finish_reason of the completions an over-long prompt gets instead of a crash (see `within_length`)
PROMPT_TOO_LONG = "prompt_too_long"


# A prompt with more characters than this many per allowed token is over-long without tokenizing it:
# tokenizing megabytes of text costs far more memory than the check is worth. Byte-level BPE tokens
# of ordinary text cover a few characters each; 32 leaves room for long runs of spaces or digits.
MAX_CHARS_PER_TOKEN = 32


@dataclasses.dataclass
class Completion:
    """One sampled continuation."""

    text: str
    num_tokens: int
    cumulative_logprob: float | None = None  # sum of the sampled tokens' log-probabilities
    finish_reason: str = "stop"  # stop | length | prompt_too_long
    token_ids: list[int] | None = None  # the sampled tokens, when the backend reports them (for `score_ids`)


# Called with (prompt token ids, that prompt's completions) as soon as they are all done, in finishing
# order: work on early finishers (parsing and voting their answers) overlaps generation of the rest.
OnFinished = Callable[[list[int], list[Completion]], None]


def render_chat(
    tokenizer, conversation: Conversation, chat_template: str | None = None, **template_kwargs,
) -> list[int]:
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
        """Token ids of each conversation under the model's (or the configured) chat template.

        A conversation too long in characters to ever fit `max_model_len` is not tokenized; it gets
        `over_long_ids()`, which `within_length` turns into that row's empty, reported completions.
        """
        template = None
        if self.spec.chat_template:
            with open(self.spec.chat_template, encoding="utf-8") as f:
                template = f.read()
        return [
            self.over_long_ids() if sum(len(str(m.get("content", ""))) for m in c) > self.max_prompt_chars()
            else render_chat(self.tokenizer, c, template, **template_kwargs)
            for c in conversations
        ]

    def generate(self, prompts: Sequence[str], sampling: SamplingSpec,
                 seeds: Sequence[int] | None = None) -> list[list[Completion]]:
        """Raw text prompts (no chat template); `n` completions for each."""
        ids = [self.over_long_ids() if len(p) > self.max_prompt_chars()
               else self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        return self.generate_ids(ids, sampling)

    def max_prompt_chars(self) -> int:
        return self.spec.max_model_len * MAX_CHARS_PER_TOKEN

    def over_long_ids(self) -> list[int]:
        """Stands for a prompt known to be over-long without tokenizing it: as long as the limit."""
        return [0] * self.spec.max_model_len

    def within_length(
        self, prompts: list[list[int]], sampling: SamplingSpec, on_finished: OnFinished | None,
        generate: Callable[[list[list[int]]], list[list[Completion]]],
    ) -> list[list[Completion]]:
        """`generate` on the prompts that leave room for a token under `max_model_len`.

        Each other prompt is reported (a warning naming its position) and gets `n` empty completions
        with finish_reason `prompt_too_long`, so its row still has an output and the batch goes on.
        """
        limit = self.spec.max_model_len
        results: list[list[Completion] | None] = [None] * len(prompts)
        fits = []
        for i, prompt in enumerate(prompts):
            if len(prompt) < limit:
                fits.append(i)
                continue
            log.warning("prompt %d is %s tokens, over max_model_len %d: it gets an empty output", i,
                        f"{len(prompt)}" if len(prompt) > limit else f"at least {limit}", limit)
            results[i] = [Completion("", 0, None, PROMPT_TOO_LONG) for _ in range(max(1, sampling.n))]
            if on_finished:
                on_finished(list(prompt), results[i])
        if fits:
            for i, completions in zip(fits, generate([prompts[i] for i in fits])):
                results[i] = completions
        return results

    def chat(
        self, conversations: Sequence[Conversation], sampling: SamplingSpec, seeds: Sequence[int] | None = None,
        **template_kwargs,
    ) -> list[list[Completion]]:
        """Chat conversations rendered with the model's template; `n` completions for each."""
        ids = self.render_chats(conversations, **template_kwargs)
        return self.generate_ids(ids, sampling, seeds=seeds) if seeds is not None else self.generate_ids(ids, sampling)

    def close(self) -> None:
        """Release the model (GPU memory, worker processes); engines that hold none keep this no-op."""
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CountTokens:
    """An engine seen through a counter: `tokens` is the sum of every completion's tokens it returned (for a
    stage's tokens/s); everything else is the engine's own."""

    def __init__(self, engine):
        self.engine, self.tokens = engine, 0

    def _counted(self, outputs: list[list[Completion]]) -> list[list[Completion]]:
        self.tokens += sum(c.num_tokens for completions in outputs for c in completions)
        return outputs

    def chat(self, *args, **kwargs) -> list[list[Completion]]:
        return self._counted(self.engine.chat(*args, **kwargs))

    def generate(self, *args, **kwargs) -> list[list[Completion]]:
        return self._counted(self.engine.generate(*args, **kwargs))

    def generate_ids(self, *args, **kwargs) -> list[list[Completion]]:
        return self._counted(self.engine.generate_ids(*args, **kwargs))

    def __getattr__(self, name):
        return getattr(self.engine, name)
