"""What every inference strategy shares: its result record, the problem prompt, timing.

A strategy is a function `(engine, problems, config) -> list[StrategyResult]`: `problems`
are input rows (dicts with at least `problem`, optionally `evaluation_method`), `config`
is the predict stage's `PredictConfig` (its `sampling` block, prompt template and the
strategy's own block, e.g. `config.rsa`). One result per row, in order.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

from ftllm import prompting
from ftllm.engine import Completion

EMPTY_OUTPUT = "\\boxed{}"  # what a row gets when no sample produced anything to vote on


@dataclasses.dataclass
class StrategyResult:
    """One problem's answer and what it cost."""

    output: str  # the competition `output`: the voted answer inside \boxed{}
    samples: list[Completion]  # the final candidates the vote ran over
    tokens: int  # every generated token spent on this problem (all rounds, loops, calls)
    seconds: float  # wall time attributed to this problem (batched calls are split evenly)
    info: dict = dataclasses.field(default_factory=dict)  # "vote": the Vote over `samples`; strategy details


def request_seeds(config, rows: list[dict], *tags) -> list[int]:
    """One sampling seed per row from the params seed, the row's id and `tags` (e.g. a round number).

    The engine draws sample j of a row from its seed and j alone, so a sample never depends on the
    other problems in the file, their order, or the batch they landed in (`predict.sampling.seed`;
    unset, `predict.engine.seed`).
    """
    import hashlib

    base = config.sampling.seed if config.sampling.seed is not None else config.engine.seed
    seeds = []
    for row in rows:
        key = "\0".join(map(str, (base, row.get("id", row.get("problem")), *tags))).encode("utf-8")
        # 31 bits: every backend's generator accepts it, and vLLM adds the sample index to it
        seeds.append(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % (2**31 - 2**16))
    return seeds


def build_conversation(row: dict, config) -> list[dict]:
    """The chat for one problem under the shared prompt contract (`config.prompt`), as sft and rl trained on it."""
    return prompting.build_conversation(row, config.prompt)


def problem_chat(row: dict, config) -> list[dict]:
    """The chat that asks `row['problem']`, built by the predict stage's own prompt template.

    Every strategy starts from exactly the conversation plain self-consistency uses, so a
    comparison between strategies changes only the strategy.
    """
    return build_conversation(row, config)


def break_ties(engine, prompt_of: Callable[[int, int], list[int]], samples: list[list[Completion]],
               votes: list) -> list:
    """Votes whose winner is tied on size, re-ranked by the tied samples' summed log-probabilities.

    Sampling skips per-token logprobs (`sampling.logprobs`, off by default: costly in vLLM), so the
    samples of tied classes are scored afterwards in one prefill pass (`engine.score_ids`); ties
    are rare at large n. `prompt_of(k, i)` is the token ids sample i of problem k was drawn from
    (asked only for tied samples). A tie stays with first appearance when some tied sample cannot
    be scored.
    """
    from ftllm.infer.vote import rerank, tied_for_first

    tied = [tied_for_first(v) for v in votes]
    wanted = [(k, i) for k, members in enumerate(tied) for i in members if samples[k][i].cumulative_logprob is None]
    if not wanted:
        return list(votes)  # no ties, or sampling already carried logprobs (the vote used them)
    scores = engine.score_ids([prompt_of(k, i) for k, i in wanted], [samples[k][i].token_ids or [] for k, i in wanted])
    for (k, i), score in zip(wanted, scores):
        samples[k][i].cumulative_logprob = score
    return [
        rerank(v, [c.cumulative_logprob for c in samples[k]], [c.text for c in samples[k]])
        if tied[k] and all(samples[k][i].cumulative_logprob is not None for i in tied[k]) else v
        for k, v in enumerate(votes)
    ]


def chat_prompts(engine, chats: list, template_kwargs: dict) -> Callable[[int, int], list[int]]:
    """`prompt_of` for `break_ties` when every sample of problem k came from `chats[k]`.

    Each chat is rendered once, on first use: only problems with a tie need their prompt.
    """
    rendered = functools.cache(lambda k: engine.render_chats([chats[k]], **template_kwargs)[0])
    return lambda k, i: rendered(k)


def vote_problems(samples: list[list[Completion]], rows: list[dict], config=None) -> list:
    """One `Vote` per problem (equivalence classes under each row's grading method), one parse pool for all."""
    from ftllm.infer.vote import Ballot, vote_many

    ballots = [
        Ballot([c.text for c in cs], [c.cumulative_logprob for c in cs], row.get("evaluation_method") or "soft")
        for cs, row in zip(samples, rows)
    ]
    if not ballots:
        return []
    return vote_many(ballots, **_vote_options(config))


def voted_results(
    samples: list[list[Completion]], tokens: list[int], problems: list[dict], config, watch: Stopwatch,
    details: list[dict], engine=None, prompt_of: Callable[[int, int], list[int]] | None = None,
) -> list[StrategyResult]:
    """Vote each problem's final samples and return its result; `details[i]` joins the vote in `info`.

    With `engine` and `prompt_of` (see `break_ties`), ties are broken by the tied samples' summed
    log-probabilities. The vote runs once for all problems, so its wall time is split over all of them.
    """
    start = watch.clock()
    votes = vote_problems(samples, problems, config)
    if engine is not None and prompt_of is not None:
        votes = break_ties(engine, prompt_of, samples, votes)
    watch.charge(list(range(len(problems))), start)
    return [
        StrategyResult(
            votes[i].output or EMPTY_OUTPUT, samples[i], tokens[i], watch.seconds[i], {"vote": votes[i], **details[i]}
        )
        for i in range(len(problems))
    ]


def _vote_options(config) -> dict:
    """Parse workers and timeout from the predict config, when it has them."""
    options = {}
    names = {"workers": "parse_workers", "timeout_s": "parse_timeout_s", "cluster_timeout_s": "vote_timeout_s"}
    for key, name in names.items():
        value = getattr(config, name, None)
        if value is not None:
            options[key] = value
    return options


class Stopwatch:
    """Splits the wall time of batched engine calls evenly over the problems in each call."""

    def __init__(self, count: int, clock=time.monotonic):
        self.clock = clock
        self.seconds = [0.0] * count

    def charge(self, indices: list[int], start: float) -> float:
        elapsed = self.clock() - start
        for i in indices:
            self.seconds[i] += elapsed / max(1, len(indices))
        return elapsed


def render_text(engine, chat: list[dict], config=None) -> str:
    """The chat rendered by the model's template as text, ready for the assistant's turn.

    Strategies that splice text into the assistant turn (s1's "Wait", TIR's code output)
    continue from raw text with `engine.generate`.
    """
    template = None
    if getattr(engine.spec, "chat_template", None):
        with open(engine.spec.chat_template, encoding="utf-8") as f:
            template = f.read()
    kwargs = dict(config.prompt.chat_template_kwargs)
    return engine.tokenizer.apply_chat_template(
        list(chat), tokenize=False, add_generation_prompt=True, chat_template=template, **kwargs
    )


def group_by_budget(items: list, remaining: list[int], total: int, buckets: int = 8) -> dict[int, list]:
    """Group continuations by token budget, rounded down so a few calls serve them all.

    The engine takes one `max_new_tokens` per call, and exact budgets would mean one call
    per trace. Budgets are rounded down to a multiple of `total / buckets` (below that, to a
    power of two), so no trace ever gets more than it has left.
    """
    step = max(1, total // buckets)
    groups: dict[int, list] = {}
    for item, left in zip(items, remaining):
        if left < 1:
            continue
        key = left - left % step if left >= step else 1 << (left.bit_length() - 1)
        groups.setdefault(key, []).append(item)
    return groups


def continue_traces(engine, traces: list, prompt_of, sampling, total: int, seed: int | None, take, watch=None) -> None:
    """Continue every trace by at most its remaining tokens, one `engine.generate` call per budget group.

    A trace has `problem` (its row) and `tokens` (spent so far out of `total`); `prompt_of(trace)`
    is the text it continues from and `take(trace, completion)` adds the continuation to it.
    With `watch`, each call's wall time is charged to the problems in that call; a caller that
    times a whole round itself passes none.
    """
    remaining = [total - trace.tokens for trace in traces]
    for budget, group in group_by_budget(traces, remaining, total).items():
        start = watch.clock() if watch is not None else 0.0
        more = dataclasses.replace(sampling, n=1, max_new_tokens=budget, seed=seed)
        for trace, (completion,) in zip(group, engine.generate([prompt_of(trace) for trace in group], more)):
            take(trace, completion)
        if watch is not None:
            watch.charge(sorted({trace.problem for trace in group}), start)


def add_logprob(total: float | None, completion: Completion) -> float | None:
    """A multi-call trace's summed log-probability so far: None once any piece came without one.

    Only sampled tokens count; text the strategy inserts ("Wait", tool output) has no logprob.
    """
    if total is None or completion.cumulative_logprob is None:
        return None
    return total + completion.cumulative_logprob


def round_seed(config, step: int) -> int | None:
    """The sampling seed of continuation round `step` (1, 2, ...): each round draws new samples, reproducibly."""
    return None if config.sampling.seed is None else config.sampling.seed + step
