"""Inference strategies: their mechanics on scripted engines, and each one end to end on the tiny model (hf)."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

from ftllm.config import EngineSpec, build
from ftllm.engine import Completion, Engine, make_engine
from ftllm.infer import PredictConfig
from ftllm.infer.sandbox import SandboxLimits, sandbox_status
from ftllm.infer.strategies import STRATEGIES
from ftllm.infer.strategies.retrieval import RetrievalConfig, few_shot_chat, mean_pool, nearest, retrieve, run_retrieval
from ftllm.infer.strategies.rsa import RSAConfig, aggregation_chat, run_rsa
from ftllm.infer.strategies.s1 import S1Config, run_s1
from ftllm.infer.strategies.tir import TIRConfig, build_program, find_code_block, run_tir

# TIR runs model code only inside the sandbox; where no namespace can be made it refuses (test_sandbox.py)
needs_sandbox = pytest.mark.skipif(sandbox_status() is not None, reason=f"no sandbox here: {sandbox_status()}")

ROWS = [
    {"id": "a", "problem": "方程式 $2x + 3 = 7$ を解きなさい。", "evaluation_method": "soft"},
    {"id": "b", "problem": "$1 + 1$ を計算しなさい。"},
]


def make_config(model: str = "fake", **blocks):
    """PredictConfig (sampling n=2, 16 new tokens) plus the strategy blocks under test."""
    base = build(
        PredictConfig,
        {
            "engine": {"model": str(model), "backend": "hf", "dtype": "float32", "batch_size": 8},
            "sampling": {"n": 2, "temperature": 1.0, "max_new_tokens": 16, "seed": 3},
            "parse_workers": 0,
        },
        "predict",
    )
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    return SimpleNamespace(**{**fields, **blocks})


class Recorder:
    """Wraps an engine and keeps every prompt it was given."""

    def __init__(self, engine):
        self.engine, self.spec, self.tokenizer = engine, engine.spec, engine.tokenizer
        self.chats, self.texts = [], []

    def chat(self, conversations, sampling, **kwargs):
        self.chats.append((list(conversations), sampling))
        return self.engine.chat(conversations, sampling, **kwargs)

    def generate(self, prompts, sampling):
        self.texts.append((list(prompts), sampling))
        return self.engine.generate(prompts, sampling)

    def __getattr__(self, name):  # render_chats, score_ids: the wrapped engine's
        return getattr(self.engine, name)


class Scripted:
    """A text engine whose reply to a prompt is `reply(prompt) -> (text, finish_reason)`."""

    def __init__(self, tokenizer, reply):
        self.tokenizer, self.reply = tokenizer, reply
        self.spec = SimpleNamespace(chat_template=None)
        self.prompts = []

    def generate(self, prompts, sampling):
        self.prompts.append(list(prompts))
        outs = []
        for p in prompts:
            text, finish = self.reply(p)
            outs.append([Completion(text, 3, -0.5, finish) for _ in range(sampling.n)])
        return outs


@pytest.fixture(scope="module")
def tokenizer():
    """The tiny model's chat tokenizer alone (no weights): enough for the scripted engines."""
    from ftllm.tiny import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="module")
def engine(tiny_model):
    return make_engine(EngineSpec(model=str(tiny_model), backend="hf", dtype="float32", batch_size=8))


def test_every_strategy_is_registered_by_an_importable_name():
    from ftllm.config import load_attr

    for name, target in STRATEGIES.items():
        assert callable(load_attr(target)), name


def test_group_by_budget_never_gives_more_than_is_left():
    from ftllm.infer.strategies.base import group_by_budget

    left = [800, 799, 401, 100, 99, 7, 1, 0]
    groups = group_by_budget(list(range(len(left))), left, total=800)
    assert sorted(i for g in groups.values() for i in g) == [0, 1, 2, 3, 4, 5, 6]  # nothing left: no call
    for budget, items in groups.items():
        assert all(1 <= budget <= left[i] for i in items)
    assert len(groups) <= 8 + 7


# --- RSA ---------------------------------------------------------------------------------

def test_aggregation_prompt_shows_the_problem_and_candidates():
    chat = [{"role": "system", "content": "sys"}, {"role": "user", "content": "PROBLEM {x}"}]
    out = aggregation_chat(chat, ["first \\boxed{1}", "second \\boxed{2}"], RSAConfig(population=2, subset=2))
    assert out[0] == chat[0] and chat[1]["content"] == "PROBLEM {x}"  # the input chat is not modified
    text = out[1]["content"]
    assert text.startswith("PROBLEM {x}")
    assert "Solution 1 ----\nfirst \\boxed{1}" in text and "Solution 2 ----\nsecond \\boxed{2}" in text
    assert "\\boxed{}" in text


class Cycling(Engine):
    """Hands out `texts` round robin across calls; a prompt's "ids" are its last turn's length.

    `score_ids` scores a sample by its text and records the prompts it was asked about.
    """

    def __init__(self, texts, scores):
        self.texts, self.scores, self.drawn, self.scored = texts, scores, 0, []
        self.spec = SimpleNamespace(chat_template=None)

    def render_chats(self, conversations, **kwargs):
        return [[len(c[-1]["content"])] for c in conversations]

    def generate_ids(self, prompts, sampling, on_finished=None, seeds=None):
        outs = []
        for _ in prompts:
            picks = [(self.drawn + j) % len(self.texts) for j in range(sampling.n)]
            self.drawn += sampling.n
            outs.append([Completion(self.texts[j], 1, None, "stop", token_ids=[j]) for j in picks])
        return outs

    def score_ids(self, prompts, continuations):
        self.scored.append([p[0] for p in prompts])
        return [self.scores[self.texts[c[0]]] for c in continuations]


def test_rsa_breaks_a_tie_by_scoring_each_member_after_its_own_aggregation_prompt():
    engine = Cycling(["\\boxed{2}", "\\boxed{3}", "\\boxed{7}"],
                     {"\\boxed{2}": -9.0, "\\boxed{3}": -1.0, "\\boxed{7}": -5.0})
    config = make_config(rsa=RSAConfig(population=3, subset=2, loops=1))
    result, = run_rsa(engine, ROWS[:1], config)
    assert result.output == "\\boxed{3}"  # three singletons: the best-scored wins, not the first
    (scored,) = engine.scored  # one pass, the three tied members, each after an aggregation prompt
    assert len(scored) == 3
    assert all(length > len(ROWS[0]["problem"]) + 20 for length in scored)  # not the bare problem prompt
    assert [c.cumulative_logprob for c in result.samples] == [-9.0, -1.0, -5.0]


@pytest.mark.slow
def test_rsa_on_the_tiny_model(engine):
    recorder = Recorder(engine)
    config = make_config(rsa=RSAConfig(population=2, subset=2, loops=1))
    results = run_rsa(recorder, ROWS, config)
    assert len(results) == 2
    assert [len(c[0]) for c in recorder.chats] == [2, 4]  # population call, then N prompts per problem
    assert recorder.chats[0][1].n == 2 and recorder.chats[1][1].n == 1
    assert all("Solution 2 ----" in chat[-1]["content"] for chat in recorder.chats[1][0])
    for r in results:
        assert len(r.samples) == 2 and r.output.startswith("\\boxed{")
        assert r.tokens > sum(c.num_tokens for c in r.samples)  # the initial population's tokens count too
        assert r.info["vote"].labels is not None


# --- s1 ----------------------------------------------------------------------------------

def test_s1_appends_wait_until_ignores_run_out_then_forces_the_answer(tokenizer):
    s1 = S1Config(think_start="<think>\n", think_end="</think>", answer_start="\n</think>\nAnswer: ", num_ignore=2)

    def reply(prompt):
        if prompt.endswith("Answer: "):
            return "\\boxed{2}", "stop"
        return " thinking", "stop"  # always ends its thinking early

    scripted = Scripted(tokenizer, reply)
    results = run_s1(scripted, ROWS[:1], make_config(s1=s1))
    thinking, wait1, wait2, answer = scripted.prompts
    assert all(p.endswith("<think>\n") for p in thinking)
    assert all(p.endswith("<think>\n thinkingWait") for p in wait1)
    assert all(p.endswith(" thinkingWait thinkingWait") for p in wait2)
    assert all(p.endswith("Wait thinking\n</think>\nAnswer: ") for p in answer)
    (result,) = results
    assert result.output == "\\boxed{2}" and result.info["ignores"] == 4  # 2 traces x 2 ignores
    # a trace's logprob sums its four sampled pieces (thinking, two continuations, answer), never "Wait"
    assert [c.cumulative_logprob for c in result.samples] == [-2.0, -2.0]


def test_s1_does_not_wait_once_the_thinking_budget_is_spent(tokenizer):
    s1 = S1Config(num_ignore=3, max_thinking_tokens=3, answer_start="\nFINAL: ")
    scripted = Scripted(tokenizer, lambda p: ("\\boxed{1}", "stop") if p.endswith("FINAL: ") else ("long", "length"))
    (result,) = run_s1(scripted, ROWS[:1], make_config(s1=s1))
    assert len(scripted.prompts) == 2  # thinking, then the forced answer: no "Wait" round
    assert result.info["ignores"] == 0 and result.output == "\\boxed{1}"


@pytest.mark.slow
def test_s1_on_the_tiny_model(engine):
    s1 = S1Config(num_ignore=1, max_thinking_tokens=12, max_answer_tokens=6)
    results = run_s1(engine, ROWS, make_config(s1=s1))
    assert len(results) == 2
    for r in results:
        assert len(r.samples) == 2 and r.output.startswith("\\boxed{") and r.tokens > 0


# --- TIR ---------------------------------------------------------------------------------

@needs_sandbox
def test_find_code_block_and_build_program():
    tir = TIRConfig()
    text = "x\n```python\nprint(1)\n```\n```output\n1\n```\n```python\ny = 2\n```tail"
    code, end = find_code_block(text, 0, tir)
    assert code == "print(1)" and text[:end].endswith("print(1)\n```")
    code2, end2 = find_code_block(text, end, tir)
    assert code2 == "y = 2" and text[end2:] == "tail"
    assert find_code_block("```python\nopen block", 0, tir) is None
    program = build_program(["a = 20", "print('noise')"], "print(a + 22)")
    from ftllm.infer.sandbox import run_code

    assert run_code(program).output.strip() == "42"  # earlier cells re-run silently, state kept


@needs_sandbox
def test_tir_runs_code_and_feeds_the_output_back(tokenizer):
    def reply(prompt):
        if "```output\n42\n```" in prompt:
            return "So the answer is \\boxed{42}.", "stop"
        return "Compute it.\n```python\nx = 6 * 7\nprint(x)\n```\n(made-up text after the fence)", "stop"

    scripted = Scripted(tokenizer, reply)
    tir = TIRConfig(max_calls=2, sandbox=SandboxLimits(wall_timeout_s=5))
    (result,) = run_tir(scripted, ROWS[:1], make_config(tir=tir))
    assert result.output == "\\boxed{42}"
    assert result.info["code_calls"] == 2  # one per trace, n=2
    trace = result.samples[0].text
    assert "made-up text" not in trace  # what followed the closing fence was dropped
    assert trace.endswith("```output\n42\n```\nSo the answer is \\boxed{42}.")
    assert "Python" in scripted.prompts[0][0]  # the TIR instruction reached the prompt
    assert result.samples[0].cumulative_logprob == -1.0  # two sampled pieces; the tool output is not sampled


@needs_sandbox
def test_tir_stops_after_max_calls(tokenizer):
    scripted = Scripted(tokenizer, lambda p: ("```python\nprint('again')\n```", "stop"))
    (result,) = run_tir(scripted, ROWS[:1], make_config(tir=TIRConfig(max_calls=3)))
    assert result.info["code_calls"] == 6  # 3 per trace
    assert result.samples[0].text.count("```output\nagain\n```") == 3
    assert result.output == "\\boxed{}" or result.output.startswith("\\boxed{")


@needs_sandbox
@pytest.mark.slow
def test_tir_on_the_tiny_model(engine):
    results = run_tir(engine, ROWS, make_config(tir=TIRConfig(max_calls=1)))
    assert len(results) == 2 and all(r.output.startswith("\\boxed{") and len(r.samples) == 2 for r in results)


# --- retrieval -----------------------------------------------------------------------------

def test_mean_pool_ignores_padding_and_normalises():
    import torch

    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    vec = mean_pool(hidden, mask)
    assert torch.allclose(vec, torch.tensor([[1.0, 0.0]]))
    scores = nearest(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.6, 0.8], [1.0, 0.0]]), k=2)
    assert scores == [[2, 1]]


@pytest.fixture()
def solved(tmp_path):
    texts = ["二次関数の最小値", "確率の問題 サイコロ", "数列の和 初項", "ベクトルの内積", "連立方程式"]
    rows = [{"id": f"s{i}", "problem": t, "solution": f"解答 {i}", "answer": str(i)} for i, t in enumerate(texts)]
    path = tmp_path / "kept.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path, rows


@pytest.mark.slow
def test_retrieve_finds_the_identical_problem_first(tiny_model, solved):
    path, rows = solved
    config = RetrievalConfig(encoder=str(tiny_model), index=str(path), top_k=2, symmetric=True)
    hits = retrieve([{"problem": rows[3]["problem"]}, {"problem": rows[1]["problem"]}], config)
    assert [h[0]["id"] for h in hits] == ["s3", "s1"] and all(len(h) == 2 for h in hits)


def test_few_shot_chat_puts_examples_between_system_and_problem():
    config = make_config(retrieval=RetrievalConfig())
    chat = few_shot_chat(ROWS[0], [{"problem": "P1", "solution": "S1", "answer": "5"}], config, config.retrieval)
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user"]
    assert chat[1]["content"] == "P1" and chat[2]["content"] == "S1\n\n\\boxed{5}"
    assert chat[3]["content"] == ROWS[0]["problem"]


@pytest.mark.slow
def test_retrieval_on_the_tiny_model(engine, tiny_model, solved):
    path, _ = solved
    recorder = Recorder(engine)
    config = make_config(retrieval=RetrievalConfig(encoder=str(tiny_model), index=str(path), top_k=2))
    results = run_retrieval(recorder, ROWS, config)
    (chats, sampling), = recorder.chats
    assert sampling.n == 2 and all(len(chat) == 1 + 2 * 2 + 1 for chat in chats)
    for r in results:
        assert len(r.info["examples"]) == 2 and len(r.samples) == 2 and r.output.startswith("\\boxed{")
