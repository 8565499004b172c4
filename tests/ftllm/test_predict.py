"""Predict library: prompt building, the sc strategy with a scripted engine, output files, config checks."""
import dataclasses
import json

import pytest

from ftllm.config import ConfigError, EngineSpec, SamplingSpec, build
from ftllm.engine import Completion
from ftllm.infer import PredictConfig
from ftllm.infer.predict import STRATEGIES, build_conversation, get_strategy, run_sc, sample_records
from ftllm.infer.submission import find_model_dir
from ftllm.prompting import PromptSpec


def _config(prompt=None, **kw):
    kw["prompt"] = PromptSpec(**(prompt or {"system_prompt": None, "answer_instruction": None}))
    return PredictConfig(engine=EngineSpec(model="unused", backend="hf"), sampling=SamplingSpec(n=3), parse_workers=0,
                         **kw)


class ScriptedEngine:
    """Answers each problem with canned samples; records the calls it received.

    Its "token ids" are the problems' texts; `scores` (sample text -> logprob) answers `score_ids`.
    """

    def __init__(self, answers, logprobs=True, scores=None):
        self.answers, self.calls, self.logprobs, self.scores, self.scored = answers, [], logprobs, scores or {}, []

    def render_chats(self, conversations, **kwargs):
        self.template_kwargs = kwargs
        return [c[-1]["content"] for c in conversations]

    def generate_ids(self, prompts, sampling, on_finished=None, seeds=None):
        self.calls.append((prompts, sampling, self.template_kwargs))
        outs = [[Completion(t, 5, -float(j) if self.logprobs else None, "stop", token_ids=[j])
                 for j, t in enumerate(self.answers[p])] for p in prompts]
        for p, cs in reversed(list(zip(prompts, outs))) if on_finished else ():  # finishing order is not prompt order
            on_finished(p, cs)
        return outs

    def score_ids(self, prompts, continuations):
        self.scored.append(len(prompts))
        return [self.scores.get(self.answers[p][c[0]]) for p, c in zip(prompts, continuations)]


def test_conversation_keeps_latex_braces():
    config = _config({"system_prompt": "sys", "answer_instruction": None,
                      "user_template": "[{category}] {problem} \\boxed{}"})
    chat = build_conversation({"problem": "$\\frac{1}{2}+x$", "category": "IA"}, config)
    assert chat == [{"role": "system", "content": "sys"},
                    {"role": "user", "content": "[IA] $\\frac{1}{2}+x$ \\boxed{}"}]
    assert build_conversation({"problem": "p"}, _config()) == [{"role": "user", "content": "p"}]
    # a missing optional field renders empty, not as a literal placeholder
    assert build_conversation({"problem": "p"}, config)[1]["content"] == "[] p \\boxed{}"


def test_sc_samples_once_and_votes_each_problem():
    engine = ScriptedEngine({"p1": ["\\boxed{2}", "\\boxed{3}", "\\boxed{3}"],
                             "p2": ["\\boxed{2(x+1)}", "\\boxed{2x+2}", "\\boxed{2x+2}"]})
    rows = [{"id": 1, "problem": "p1"}, {"id": 2, "problem": "p2", "evaluation_method": "strict"}]
    results = run_sc(engine, rows, _config({"system_prompt": None, "answer_instruction": None,
                                            "chat_template_kwargs": {"reasoning_effort": "high"}}))
    assert len(engine.calls) == 1 and engine.calls[0][1].n == 3  # one batched call, n per prompt
    assert engine.calls[0][2] == {"reasoning_effort": "high"}
    assert [r.output for r in results] == ["\\boxed{3}", "\\boxed{2x+2}"]
    assert results[0].tokens == 15
    records = sample_records(rows, results, [r.info["vote"] for r in results])
    assert len(records) == 6
    assert records[0] == {"id": 1, "sample": 0, "text": "\\boxed{2}", "num_tokens": 5, "logprob": -0.0,
                          "finish_reason": "stop", "answer": "$2$", "class_index": 1, "class_size": 1}
    assert [r["class_index"] for r in records[3:]] == [1, 0, 0]  # strict: 2(x+1) is its own class


@pytest.mark.parametrize("workers", [0, 2])
def test_sc_breaks_ties_by_scoring_only_the_tied_samples(workers):
    answers = {"tie": ["\\boxed{2}", "\\boxed{3}", "\\boxed{7}"], "clear": ["\\boxed{5}", "\\boxed{5}", "\\boxed{4}"]}
    config = dataclasses.replace(_config(), parse_workers=workers)
    engine = ScriptedEngine(answers, logprobs=False,
                            scores={"\\boxed{2}": -9.0, "\\boxed{3}": -1.0, "\\boxed{7}": -5.0})
    results = run_sc(engine, [{"id": 1, "problem": "tie"}, {"id": 2, "problem": "clear"}], config)
    assert [r.output for r in results] == ["\\boxed{3}", "\\boxed{5}"]  # the best-scored of three singletons
    assert engine.scored == [3]  # one scoring pass, for the tied problem's samples only
    assert [c.cumulative_logprob for c in results[0].samples] == [-9.0, -1.0, -5.0]
    unscorable = ScriptedEngine(answers, logprobs=False)
    assert run_sc(unscorable, [{"id": 1, "problem": "tie"}], config)[0].output == "\\boxed{2}"  # first appearance


def test_strategy_registry():
    assert get_strategy("sc") is run_sc
    assert callable(get_strategy("rsa")) and callable(get_strategy("budget"))
    assert set(STRATEGIES) >= {"sc", "rsa", "budget"}


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="predict.strategy"):
        build(PredictConfig, {"engine": {"model": "m"}, "strategy": "magic"}, "predict")
    with pytest.raises(ConfigError, match="user_template"):
        build(PredictConfig, {"engine": {"model": "m"}, "prompt": {"user_template": "no placeholder"}}, "predict")
    with pytest.raises(ConfigError, match="predict.sampling.nn"):
        build(PredictConfig, {"engine": {"model": "m"}, "sampling": {"nn": 3}}, "predict")


def test_model_dir_discovery(tmp_path):
    (tmp_path / "models" / "b-model").mkdir(parents=True)
    (tmp_path / "models" / "a-empty").mkdir()
    (tmp_path / "models" / "b-model" / "config.json").write_text(json.dumps({}))
    assert find_model_dir([tmp_path / "nowhere", tmp_path / "models"]) == tmp_path / "models" / "b-model"
    with pytest.raises(FileNotFoundError):
        find_model_dir([tmp_path / "nowhere"])
