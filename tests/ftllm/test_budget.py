"""Budgeted adaptive sampling on a fake engine and a fake clock: never over budget, stops early, always answers."""
from __future__ import annotations

import dataclasses
import random

import pytest

from ftllm.config import build
from ftllm.engine import Completion
from ftllm.infer import PredictConfig
from ftllm.infer.budget import BudgetConfig, run_budget, stop_reason


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeEngine:
    """Answers from a per-problem list of choices; each call advances the clock by a cost model.

    `cost(samples, rng)` is the seconds a call with that many samples takes.
    """

    def __init__(self, clock: FakeClock, answers: dict[str, list[str]], cost, seed: int = 0):
        self.clock, self.answers, self.cost = clock, answers, cost
        self.rng = random.Random(seed)
        self.calls: list[tuple[int, int, int | None]] = []  # (prompts, n, seed)

    def chat(self, conversations, sampling, seeds=None, **kwargs):
        self.calls.append((len(conversations), sampling.n, sampling.seed))
        self.clock.now += self.cost(len(conversations) * sampling.n, self.rng)
        outs = []
        for chat in conversations:
            choices = self.answers[chat[-1]["content"]]
            outs.append([Completion(f"so \\boxed{{{self.rng.choice(choices)}}}", 5, -1.0) for _ in range(sampling.n)])
        return outs


class ScoringEngine(FakeEngine):
    """Samples without logprobs and scores tied samples afterwards (a prefill: half a sampling call's cost).

    A sample's score is `scores[answer]`; its token ids are [index of its answer in the choices].
    """

    def __init__(self, clock, answers, cost, scores: dict[str, float] | None = None, seed: int = 0):
        super().__init__(clock, answers, cost, seed)
        self.scores, self.scored = scores or {}, []

    def chat(self, conversations, sampling, seeds=None, **kwargs):
        outs = super().chat(conversations, sampling, **kwargs)
        for chat, completions in zip(conversations, outs):
            choices = self.answers[chat[-1]["content"]]
            for c in completions:
                c.cumulative_logprob, c.token_ids = None, [choices.index(c.text[len("so \\boxed{"):-1])]
        return outs

    def render_chats(self, conversations, **kwargs):
        return [[0] for _ in conversations]

    def score_ids(self, prompts, continuations):
        self.scored.append(len(prompts))
        self.clock.now += self.cost(len(prompts), self.rng) / 2
        return [self.scores.get(str(c[0]), -float(c[0])) for c in continuations]


def make_config(**budget) -> PredictConfig:
    return build(
        PredictConfig,
        {"engine": {"model": "fake", "backend": "hf"}, "sampling": {"seed": 7}, "parse_workers": 0,
         "strategy": "budget", "budget": budget},
        "predict",
    )


def rows_for(answers: dict[str, list[str]]) -> list[dict]:
    return [{"id": str(i), "problem": p} for i, p in enumerate(answers)]


def linear(per_sample: float, overhead: float = 0.0):
    return lambda samples, rng: overhead + per_sample * samples


def batched(per_sample: float, overhead: float):
    """Bigger batches are cheaper per sample (as on a GPU); +-20% noise."""
    return lambda samples, rng: (overhead + per_sample * samples**0.7) * rng.uniform(0.8, 1.2)


@pytest.mark.parametrize(
    "cost", [linear(0.5), linear(0.1, overhead=3.0), batched(0.3, 2.0)], ids=["linear", "overhead", "batched"]
)
@pytest.mark.parametrize("time_budget_s", [20.0, 75.0, 300.0])
@pytest.mark.parametrize("engine_class", [FakeEngine, ScoringEngine], ids=["logprobs", "tie-scoring"])
def test_never_exceeds_the_budget_and_every_row_gets_output(cost, time_budget_s, engine_class):
    clock = FakeClock()
    answers = {f"problem {i}": ["1", "2", "3", "4"] for i in range(12)}  # never decided early
    engine = engine_class(clock, answers, cost)
    config = make_config(time_budget_s=time_budget_s, round_size=2, max_n=16, reserve_s=0.0, safety=1.3)
    start = clock.now
    results = run_budget(engine, rows_for(answers), config, clock=clock)
    assert clock.now - start <= time_budget_s
    assert len(results) == len(answers)
    assert all(r.output.startswith("\\boxed{") for r in results)
    assert all(len(r.samples) <= 16 and len(r.samples) % 2 == 0 for r in results)
    stops = {r.info["stop"] for r in results}
    if time_budget_s == 20.0:
        assert "budget" in stops  # 12 problems x 16 samples cannot fit in 20 s


def test_spends_the_budget_rather_than_stopping_early():
    """With a tight budget the sampler keeps sampling until the next call would not fit."""
    clock = FakeClock()
    answers = {f"p{i}": ["1", "2", "3"] for i in range(4)}
    engine = FakeEngine(clock, answers, linear(1.0))
    config = make_config(time_budget_s=50.0, round_size=2, max_n=64, reserve_s=0.0, safety=1.0)
    results = run_budget(engine, rows_for(answers), config, clock=clock)
    used = clock.now - 1000.0
    assert used <= 50.0
    assert used >= 50.0 - 8.0  # the last call (4 problems x 2 samples = 8 s) did not fit any more
    assert sum(len(r.samples) for r in results) == used  # 1 s per sample


def test_final_ties_are_broken_by_score_when_the_pass_fits():
    answers, scores = {"tie": ["1", "2"]}, {"0": -1.0, "1": -5.0}  # "1" scores better; "2" is drawn first

    def run(time_budget_s: float):
        engine = ScoringEngine(FakeClock(), answers, linear(0.5), scores=scores)
        engine.rng.choice = lambda choices: choices[len(engine.calls) % 2]  # "2" then "1": two tied singletons
        config = make_config(time_budget_s=time_budget_s, round_size=1, max_n=2, min_n=2, reserve_s=0.0,
                             probe_problems=1, safety=1.0)
        (result,) = run_budget(engine, rows_for(answers), config, clock=engine.clock)
        assert len(result.samples) == 2
        return engine, result

    engine, result = run(100.0)
    assert engine.scored == [2] and result.output == "\\boxed{1}"  # the better-scored of the tied answers
    engine, result = run(1.2)  # two 0.5 s calls fit; a third (or the scoring pass) would not
    assert engine.scored == [] and result.output == "\\boxed{2}"  # no time left: first appearance


def test_no_time_at_all_still_answers_every_row():
    clock = FakeClock()
    answers = {"a": ["1"], "b": ["2"]}
    engine = FakeEngine(clock, answers, linear(1.0))
    config = make_config(time_budget_s=5.0, reserve_s=10.0)
    results = run_budget(engine, rows_for(answers), config, clock=clock)
    assert engine.calls == []
    assert [r.output for r in results] == ["\\boxed{}", "\\boxed{}"]
    assert all(r.info["stop"] == "budget" for r in results)


def test_easy_problems_stop_early_and_hard_ones_get_the_rest():
    clock = FakeClock()
    answers = {"easy": ["7"], "hard": ["1", "2", "3", "4", "5"]}
    engine = FakeEngine(clock, answers, linear(0.01))
    config = make_config(time_budget_s=1000.0, round_size=4, max_n=32, min_n=8, stop_share=1.0)
    easy, hard = run_budget(engine, rows_for(answers), config, clock=clock)
    assert easy.info["stop"] == "confident" and len(easy.samples) == 8
    assert easy.output == "\\boxed{7}"
    assert hard.info["stop"] in ("max_n", "decided") and len(hard.samples) > 8
    assert easy.info["vote"].classes[0].size == 8  # the vote is kept for samples.parquet


def test_each_call_draws_with_a_new_seed():
    clock = FakeClock()
    answers = {"x": ["1", "2"]}
    engine = FakeEngine(clock, answers, linear(0.01))
    run_budget(engine, rows_for(answers), make_config(round_size=2, max_n=8, min_n=8, stop_share=2.0), clock=clock)
    seeds = [seed for _, _, seed in engine.calls]
    assert len(seeds) == len(set(seeds)) >= 2


def test_probe_then_larger_calls():
    clock = FakeClock()
    answers = {f"p{i}": ["1", "2"] for i in range(10)}
    engine = FakeEngine(clock, answers, linear(0.01))
    run_budget(engine, rows_for(answers), make_config(round_size=2, max_n=4, probe_problems=2), clock=clock)
    prompts = [p for p, _, _ in engine.calls]
    assert prompts[0] == 2 and prompts[1] == 8  # probe, then the rest of round 1 at once


@pytest.mark.parametrize(
    "sizes, n, expected",
    [
        ([8], 8, "confident"),  # unanimous at min_n
        ([6, 2], 8, None),  # 6 - 2 = 4 <= 8 samples left
        ([13, 2], 15, "decided"),  # 11 ahead with 1 sample left
        ([9, 7], 15, "decided"),  # 2 ahead, 1 left
        ([8, 8], 16, "max_n"),
        ([], 8, None),  # nothing parsed yet
        ([4], 4, None),  # unanimous but below min_n
    ],
)
def test_stop_reason(sizes, n, expected):
    config = BudgetConfig(round_size=4, max_n=16, min_n=8, stop_share=1.0)
    assert stop_reason(sizes, n, config) == expected


def test_stop_share_below_one_stops_on_a_clear_majority():
    config = BudgetConfig(round_size=4, max_n=64, min_n=8, stop_share=0.75)
    assert stop_reason([6, 2], 8, config) == "confident"
    assert stop_reason([5, 3], 8, config) is None


@pytest.mark.parametrize(
    "overrides, key",
    [({"max_n": 10, "round_size": 4}, "max_n"), ({"time_budget_s": 0}, "time_budget_s"), ({"safety": 0.5}, "safety")],
)
def test_config_is_validated(overrides, key):
    with pytest.raises(ValueError, match=key):
        dataclasses.replace(BudgetConfig(), **overrides)
