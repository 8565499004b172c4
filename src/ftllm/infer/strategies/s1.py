"""s1 budget forcing: control how long the model thinks.

1. Open the thinking (`think_start` after the template's assistant prefix) and generate with
   a stop on the end-of-think delimiter and `max_thinking_tokens` tokens.
2. While a trace has stopped on its own fewer than `num_ignore` times and budget is left,
   suppress the end of thinking: append `wait` ("Wait") and continue with the remaining budget.
3. Then force the answer: append `answer_start` (which closes the thinking) and generate the
   answer, by default greedily.

Delimiters depend on the chat template, so they come from params:
think-tag templates use `<think>` / `</think>`; harmony (GPT-OSS, llm-jp-4) thinks in the
analysis channel, ends it with `<|end|>` and answers in the final channel
(`answer_start: "<|end|><|start|>assistant<|channel|>final<|message|>"`). Special tokens are
kept in the decoded text here (`skip_special_tokens=False`) so such stops can match.

`config.sampling.n` traces per problem are forced independently and their answers voted.
"""
from __future__ import annotations

import dataclasses

from ftllm.engine import Completion
from ftllm.infer.strategies.base import (
    Stopwatch,
    StrategyResult,
    add_logprob,
    continue_traces,
    problem_chat,
    render_text,
    round_seed,
    voted_results,
)


@dataclasses.dataclass(frozen=True)
class S1Config:
    """YAML keys under `predict.s1`."""

    think_start: str = "<think>\n"  # appended to the prompt to open the thinking ("" if the template opens it)
    think_end: str = "</think>"  # the stop string that ends thinking
    answer_start: str = "\n</think>\n\n"  # appended to force the answer (closes the thinking)
    wait: str = "Wait"  # replaces the end of thinking while ignores are left
    num_ignore: int = 1  # how many times the end of thinking is suppressed
    max_thinking_tokens: int = 8000
    max_answer_tokens: int = 512
    answer_temperature: float = 0.0

    def __post_init__(self) -> None:
        if not self.think_end:
            raise ValueError("s1.think_end must not be empty")
        if self.num_ignore < 0:
            raise ValueError(f"s1.num_ignore must be >= 0, got {self.num_ignore}")
        if self.max_thinking_tokens < 1 or self.max_answer_tokens < 1:
            raise ValueError("s1.max_thinking_tokens and s1.max_answer_tokens must be >= 1")


@dataclasses.dataclass
class _Trace:
    problem: int
    thinking: str = ""
    tokens: int = 0
    ignores: int = 0
    open: bool = True  # still thinking
    answer: Completion | None = None
    logprob: float | None = 0.0  # summed over every sampled piece (thinking, continuations, answer)


def run_s1(engine, problems: list[dict], config) -> list[StrategyResult]:
    """Budget-forced thinking under `config.s1`, `config.sampling.n` traces per problem."""
    s1: S1Config = config.s1
    prefixes = [render_text(engine, problem_chat(row, config), config) + s1.think_start for row in problems]
    watch = Stopwatch(len(problems))
    # special tokens stay in the text so template delimiters such as <|end|> can be matched
    think = dataclasses.replace(config.sampling, stop=(s1.think_end,), skip_special_tokens=False)

    start = watch.clock()
    sampling = dataclasses.replace(think, n=config.sampling.n, max_new_tokens=s1.max_thinking_tokens)
    traces = []
    for i, completions in enumerate(engine.generate(prefixes, sampling)):
        for c in completions:
            traces.append(_Trace(i, c.text, c.num_tokens, open=c.finish_reason == "stop",
                                 logprob=c.cumulative_logprob))
    watch.charge(list(range(len(problems))), start)

    for step in range(s1.num_ignore):
        # traces that ended their thinking early get "Wait" and the rest of their budget
        going = [t for t in traces if t.open and t.tokens < s1.max_thinking_tokens]
        for t in traces:
            t.open = t.open and t.tokens < s1.max_thinking_tokens
        if not going:
            break
        for t in going:
            t.ignores += 1
            t.thinking += s1.wait
        continue_traces(
            engine, going, lambda t: prefixes[t.problem] + t.thinking, think, s1.max_thinking_tokens,
            round_seed(config, step + 1), _add_thinking, watch,
        )

    start = watch.clock()
    answer = dataclasses.replace(
        config.sampling, n=1, temperature=s1.answer_temperature, max_new_tokens=s1.max_answer_tokens
    )
    outs = engine.generate([prefixes[t.problem] + t.thinking + s1.answer_start for t in traces], answer)
    for t, (c,) in zip(traces, outs):
        t.answer = c
        t.tokens += c.num_tokens
        t.logprob = add_logprob(t.logprob, c)
    watch.charge(list(range(len(problems))), start)
    return _results(traces, problems, config, watch)


def _add_thinking(trace: _Trace, completion: Completion) -> None:
    trace.thinking += completion.text
    trace.tokens += completion.num_tokens
    trace.logprob = add_logprob(trace.logprob, completion)
    trace.open = completion.finish_reason == "stop"  # stopped on the end of thinking, not out of budget


def _results(traces: list[_Trace], problems: list[dict], config, watch: Stopwatch) -> list[StrategyResult]:
    answer_start = config.s1.answer_start
    samples: list[list[Completion]] = [[] for _ in problems]
    tokens = [0] * len(problems)
    ignores = [0] * len(problems)
    for t in traces:
        # the whole trace: extraction takes the rightmost answer, so the forced answer wins and a
        # box in the thinking is the fallback when the answer has none
        text = t.thinking + answer_start + t.answer.text
        samples[t.problem].append(Completion(
            text=text, num_tokens=t.tokens, cumulative_logprob=t.logprob,
            finish_reason=t.answer.finish_reason,
        ))
        tokens[t.problem] += t.tokens
        ignores[t.problem] += t.ignores
    return voted_results(samples, tokens, problems, config, watch, [{"ignores": n} for n in ignores])
