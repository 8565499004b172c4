"""Predict library: prompt building, the sc strategy with a scripted engine, output files, config checks."""
import json

import pytest

from ftllm.config import ConfigError, EngineSpec, SamplingSpec, build
from ftllm.engine import Completion
from ftllm.infer import PredictConfig
from ftllm.infer.predict import STRATEGIES, build_conversation, get_strategy, run_sc, sample_records
from ftllm.infer.submission import find_model_dir


def _config(**kw):
    return PredictConfig(engine=EngineSpec(model="unused", backend="hf"), sampling=SamplingSpec(n=3), parse_workers=0, **kw)


class ScriptedEngine:
    """Answers each problem with canned samples; records the calls it received."""

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def chat(self, conversations, sampling, **kwargs):
        self.calls.append((conversations, sampling, kwargs))
        return [[Completion(t, 5, -float(j), "stop") for j, t in enumerate(self.answers[c[-1]["content"]])] for c in conversations]


def test_conversation_keeps_latex_braces():
    config = _config(system_prompt="sys", user_template="[{category}] {problem} \\boxed{}")
    chat = build_conversation({"problem": "$\\frac{1}{2}+x$", "category": "IA"}, config)
    assert chat == [{"role": "system", "content": "sys"}, {"role": "user", "content": "[IA] $\\frac{1}{2}+x$ \\boxed{}"}]
    assert build_conversation({"problem": "p"}, _config(system_prompt=None)) == [{"role": "user", "content": "p"}]


def test_sc_samples_once_and_votes_each_problem():
    engine = ScriptedEngine({"p1": ["\\boxed{2}", "\\boxed{3}", "\\boxed{3}"], "p2": ["\\boxed{2(x+1)}", "\\boxed{2x+2}", "\\boxed{2x+2}"]})
    rows = [{"id": 1, "problem": "p1"}, {"id": 2, "problem": "p2", "evaluation_method": "strict"}]
    results = run_sc(engine, rows, _config(chat_template_kwargs={"reasoning_effort": "high"}))
    assert len(engine.calls) == 1 and engine.calls[0][1].n == 3  # one batched call, n per prompt
    assert engine.calls[0][2] == {"reasoning_effort": "high"}
    assert [r.output for r in results] == ["\\boxed{3}", "\\boxed{2x+2}"]
    assert results[0].tokens == 15
    records = sample_records(rows, results, [r.info["vote"] for r in results])
    assert len(records) == 6
    assert records[0] == {"id": 1, "sample": 0, "text": "\\boxed{2}", "num_tokens": 5, "logprob": -0.0,
                          "finish_reason": "stop", "answer": "$2$", "class_index": 1, "class_size": 1}
    assert [r["class_index"] for r in records[3:]] == [1, 0, 0]  # strict: 2(x+1) is its own class


def test_strategy_registry():
    assert get_strategy("sc") is run_sc
    assert callable(get_strategy("rsa")) and callable(get_strategy("budget"))
    assert set(STRATEGIES) >= {"sc", "rsa", "budget"}


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="predict.strategy"):
        build(PredictConfig, {"engine": {"model": "m"}, "strategy": "magic"}, "predict")
    with pytest.raises(ConfigError, match="user_template"):
        build(PredictConfig, {"engine": {"model": "m"}, "user_template": "no placeholder"}, "predict")
    with pytest.raises(ConfigError, match="predict.sampling.nn"):
        build(PredictConfig, {"engine": {"model": "m"}, "sampling": {"nn": 3}}, "predict")


def test_model_dir_discovery(tmp_path):
    (tmp_path / "models" / "b-model").mkdir(parents=True)
    (tmp_path / "models" / "a-empty").mkdir()
    (tmp_path / "models" / "b-model" / "config.json").write_text(json.dumps({}))
    assert find_model_dir([tmp_path / "nowhere", tmp_path / "models"]) == tmp_path / "models" / "b-model"
    with pytest.raises(FileNotFoundError):
        find_model_dir([tmp_path / "nowhere"])
