"""Budgeted adaptive self-consistency: one wall-clock budget for a whole input file.

Fixed-N voting spends the same N samples on a problem every sample agrees on as on one
where they scatter. Here sampling runs in rounds: each round is batched engine calls over
the still-undecided problems, `round_size` samples each. After each call the samples are
voted, and a problem stops as soon as

- its leading class can no longer be overtaken within `max_n` samples ("decided"), or
- from `min_n` samples on, the leader holds at least `stop_share` of them ("confident"), or
- it reached `max_n` ("max_n").

The time saved on easy problems goes to the undecided ones in later rounds.

The budget is never knowingly overrun: before each call its time is estimated from the
last call (seconds per sample, never faster than the last call as a whole, times
`safety`), and the call is shrunk or skipped if it would end past the deadline. The very
first call has nothing to be estimated from, so it is a small probe (`probe_problems`).
A call's measured time includes voting its samples; the budget starts when `run_budget`
is called (load the engine first) and `reserve_s` is held back for writing the outputs.
Rows left without time keep what they have ("budget"); every row always gets an `output`:
the vote over its samples, or an empty `\\boxed{}` when it has none. Final votes tied on size are
re-ranked by the tied samples' summed log-probability (one scoring pass) only when the same
estimate says that pass still fits; otherwise the tie stays with first appearance.

    results = run_budget(engine, rows, predict_config)  # registered as strategy "budget"
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from ftllm.infer.strategies.base import (
    EMPTY_OUTPUT,
    StrategyResult,
    break_ties,
    chat_prompts,
    problem_chat,
    request_seeds,
    vote_problems,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BudgetConfig:
    """YAML keys under `predict.budget`."""

    time_budget_s: float = 30000.0  # the whole input file (the competition allowed 500 minutes)
    round_size: int = 4  # samples per problem per round
    max_n: int = 64  # most samples one problem may get (a multiple of round_size)
    min_n: int = 8  # the confidence rule applies only from this many samples on
    stop_share: float = 1.0  # leader's share of the samples that stops a problem early; > 1 disables the rule
    probe_problems: int = 1  # problems in the first (unestimated) call
    max_batch_problems: int = 1024  # most problems in one engine call
    safety: float = 1.25  # estimated call time is multiplied by this
    reserve_s: float = 10.0  # kept back for the final vote and writing the outputs

    def __post_init__(self) -> None:
        if self.time_budget_s <= 0:
            raise ValueError(f"budget.time_budget_s must be > 0, got {self.time_budget_s}")
        if self.round_size < 1 or self.max_n < self.round_size or self.max_n % self.round_size:
            raise ValueError(
                f"budget.max_n ({self.max_n}) must be a positive multiple of budget.round_size ({self.round_size})"
            )
        if self.stop_share <= 0:
            raise ValueError(f"budget.stop_share must be > 0, got {self.stop_share}")
        if self.probe_problems < 1 or self.max_batch_problems < 1:
            raise ValueError("budget.probe_problems and budget.max_batch_problems must be >= 1")
        if self.safety < 1:
            raise ValueError(f"budget.safety must be >= 1, got {self.safety}")
        if self.reserve_s < 0:
            raise ValueError(f"budget.reserve_s must be >= 0, got {self.reserve_s}")


@dataclasses.dataclass
class _Problem:
    """Sampling state of one row."""

    samples: list = dataclasses.field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    stop: str | None = None  # decided | confident | max_n | budget
    output: str = EMPTY_OUTPUT
    vote: object = None  # the latest Vote over `samples`


def stop_reason(class_sizes: list[int], n: int, config: BudgetConfig) -> str | None:
    """Why a problem with `n` samples and these class sizes needs no more samples (None: it does)."""
    if n >= config.max_n:
        return "max_n"
    sizes = sorted(class_sizes, reverse=True) + [0, 0]
    lead, second = sizes[0], sizes[1]
    if lead > 0 and lead - second > config.max_n - n:
        return "decided"
    if n >= config.min_n and lead > 0 and lead >= config.stop_share * n:
        return "confident"
    return None


class _CallTimer:
    """Estimates the next engine call's seconds from the last measured call."""

    def __init__(self, safety: float):
        self.safety = safety
        self.last: tuple[float, int] | None = None  # (seconds, samples)

    def record(self, seconds: float, samples: int) -> None:
        self.last = (max(seconds, 1e-9), samples)

    def largest_fitting(self, remaining_s: float, per_problem: int, wanted: int) -> int:
        """Most problems (<= wanted) whose call should finish within `remaining_s`; 0 if none."""
        seconds, samples = self.last
        # Proportional in samples: batching makes bigger calls cheaper per sample, so this
        # over-estimates them; a smaller call is never assumed faster than the last one.
        floor = self.safety * seconds
        if floor > remaining_s:
            return 0
        fit = int(samples * remaining_s / (self.safety * seconds) // per_problem)
        return max(1, min(wanted, fit))


def run_budget(engine, problems: list[dict], config, clock: Callable[[], float] = time.monotonic, voter=None):
    """Adaptive self-consistency under `config.budget`; one `StrategyResult` per row.

    `clock` and `voter(samples_per_problem, rows) -> votes` are injectable so tests can run a
    fake engine on a fake clock.
    """
    budget: BudgetConfig = config.budget
    voter = voter or (lambda samples, rows: vote_problems(samples, rows, config))
    start = clock()
    deadline = start + budget.time_budget_s - budget.reserve_s
    chats = [problem_chat(row, config) for row in problems]
    template_kwargs = dict(config.prompt.chat_template_kwargs)
    state = [_Problem() for _ in problems]
    timer = _CallTimer(budget.safety)
    base_seed = config.sampling.seed if config.sampling.seed is not None else 0
    calls = 0
    for round_index in range(budget.max_n // budget.round_size):
        queue = [i for i, p in enumerate(state) if p.stop is None]
        while queue:
            if timer.last is None:
                take = min(budget.probe_problems, len(queue)) if clock() < deadline else 0
            else:
                wanted = min(len(queue), budget.max_batch_problems)
                take = timer.largest_fitting(deadline - clock(), budget.round_size, wanted)
            if take == 0:
                _stop_for_budget(state)
                return _results(state, round_index, calls)
            batch, queue = queue[:take], queue[take:]
            # seeds per problem and round: a round draws new samples, and a problem's samples do not
            # depend on which others share its call
            sampling = dataclasses.replace(config.sampling, n=budget.round_size, seed=base_seed + calls)
            seeds = request_seeds(config, [problems[i] for i in batch], round_index)
            t0 = clock()
            outs = engine.chat([chats[i] for i in batch], sampling, seeds=seeds, **template_kwargs)
            for i, completions in zip(batch, outs):
                state[i].samples.extend(completions)
                state[i].tokens += sum(c.num_tokens for c in completions)
            votes = voter([state[i].samples for i in batch], [problems[i] for i in batch])
            for i, vote in zip(batch, votes):
                state[i].output, state[i].vote = vote.output or EMPTY_OUTPUT, vote
                state[i].stop = stop_reason([c.size for c in vote.classes], len(state[i].samples), budget)
            # the vote is timed with the call: it also has to fit before the deadline
            elapsed = clock() - t0
            timer.record(elapsed, len(batch) * budget.round_size)
            calls += 1
            for i in batch:
                state[i].seconds += elapsed / len(batch)
        log.info("round %d: %d problems still undecided", round_index + 1, sum(p.stop is None for p in state))
    _break_final_ties(engine, state, chats, template_kwargs, timer, deadline, clock, budget.round_size)
    return _results(state, budget.max_n // budget.round_size, calls)


def _break_final_ties(engine, state: list[_Problem], chats, template_kwargs, timer: _CallTimer, deadline: float,
                      clock: Callable[[], float], per_problem: int) -> None:
    """Re-rank final votes tied on size by the tied samples' summed log-probability, if that fits the budget.

    Scoring is one prefill of the tied samples, cheaper than sampling as many; it runs only when
    sampling that many would still fit before the deadline (the estimate that paces the rounds).
    Engines that cannot score keep first appearance.
    """
    from ftllm.infer.vote import tied_for_first

    tied = [k for k, p in enumerate(state) if p.vote is not None and tied_for_first(p.vote)]
    if not tied or timer.last is None or not hasattr(engine, "score_ids"):
        return
    samples = sum(len(tied_for_first(state[k].vote)) for k in tied)
    needed = -(-samples // per_problem)
    if timer.largest_fitting(deadline - clock(), per_problem, needed) < needed:
        return
    t0 = clock()
    votes = break_ties(engine, chat_prompts(engine, [chats[k] for k in tied], template_kwargs),
                       [state[k].samples for k in tied], [state[k].vote for k in tied])
    elapsed = clock() - t0
    for k, vote in zip(tied, votes):
        state[k].vote, state[k].output = vote, vote.output or EMPTY_OUTPUT
        state[k].seconds += elapsed / len(tied)


def _stop_for_budget(state: list[_Problem]) -> None:
    for problem in state:
        if problem.stop is None:
            problem.stop = "budget"


def _results(state: list[_Problem], rounds: int, calls: int) -> list[StrategyResult]:
    return [
        StrategyResult(
            output=p.output,
            samples=p.samples,
            tokens=p.tokens,
            seconds=p.seconds,
            info={"n_samples": len(p.samples), "stop": p.stop or "max_n", "rounds": rounds, "calls": calls}
            | ({"vote": p.vote} if p.vote is not None else {}),
        )
        for p in state
    ]
