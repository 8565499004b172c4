"""Unit tests for ftllm.judge: each filter with rows built to pass and to fail it, a fake engine for the LLM steps."""
from __future__ import annotations

import dataclasses

import pytest

from ftllm.config import ConfigError, build
from ftllm.engine import Completion
from ftllm.judge import DROP_REASONS, JudgeConfig, curate
from ftllm.judge.decontam import DecontamConfig, EvalIndex
from ftllm.judge.dedup import DedupConfig, find_exact_duplicates, find_near_duplicates
from ftllm.judge.filters import FilterConfig, check_format, check_language, check_length, parse_given_answer
from ftllm.judge.text import japanese_share, ngrams, normalize_text, text_units
from ftllm.judge.verdict import parse_verdict, verdict_conversation


def make_row(i: int, problem: str | None = None, answer: str = "5", **extra) -> dict:
    row = {
        "id": f"r{i}", "field": "algebra", "difficulty": "easy", "tool_use": False, "sample_index": i,
        "problem": problem or (
            f"ある数に {i + 2} をかけて {i + 7} を足すと {5 * (i + 2) + i + 7} になる。ある数を求めなさい。"),
        "reasoning": "", "solution": "両辺から足した数を引き、かけた数で割ると、ある数は 5 である。", "answer": answer,
        "uses_python": False, "raw_text": "",
    }
    return {**row, **extra}


class FakeEngine:
    """Returns canned replies in order; records what it was asked."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.calls = []
        self.closed = False

    def chat(self, conversations, sampling, **kwargs):
        self.calls.append((conversations, sampling))
        out = []
        for _ in conversations:
            texts = self.replies.pop(0)
            texts = texts if isinstance(texts, list) else [texts]
            out.append([Completion(t, len(t)) for t in texts])
        return out

    def close(self):
        self.closed = True


def test_normalisation_and_units():
    assert normalize_text("  ＡＢＣ\u3000１２３  x ") == "abc 123 x"
    assert text_units("方程式 ３x+5") == ["方", "程", "式", "3x", "+", "5"]
    assert text_units("Solve the Equation") == ["solve", "the", "equation"]
    assert ngrams(["a", "b", "c"], 2) == {"a\x1fb", "b\x1fc"}
    assert ngrams(["a"], 3) == {"a"}
    assert japanese_share("方程式 $3x + 5 = 20$ を解きなさい。") == 1.0
    assert japanese_share("Solve $3x+5=20$.") == 0.0


@pytest.mark.parametrize("answer, ok", [("5", True), ("\\frac{1}{2}", True), ("$x = 3$", True),
                                        ("\\boxed{2\\sqrt{3}}", True), ("", False), ("わからない", False)])
def test_answer_parse(answer, ok):
    assert bool(parse_given_answer(answer)) is ok


def test_format_filter():
    config = FilterConfig()
    assert check_format(make_row(0), config) is None
    assert check_format(make_row(0, answer="わからない"), config).reason == "answer_unparseable"
    assert check_format(make_row(0, answer="わからない"), FilterConfig(parse_answer=False)) is None
    assert check_format(make_row(0, solution="  "), config).reason == "missing_field"
    assert check_format(make_row(0, answer=None), config).reason == "missing_field"


def test_length_filter():
    config = FilterConfig(min_problem_chars=10, max_problem_chars=60, min_solution_chars=5, max_solution_chars=100)
    assert check_length(make_row(0), config) is None
    assert check_length(make_row(0, problem="1+1=?"), config).reason == "too_short"
    assert check_length(make_row(0, problem="あ" * 61), config).reason == "too_long"
    assert check_length(make_row(0, solution="x" * 101), config).reason == "too_long"


def test_language_filter():
    config = FilterConfig(min_language_share=0.5)
    assert check_language(make_row(0), config) is None
    drop = check_language(make_row(0, problem="Find the number $x$ with $3x + 5 = 20$."), config)
    assert drop.reason == "wrong_language" and "problem" in drop.detail
    assert check_language(make_row(0, problem="Find $x$."), FilterConfig(language=None)) is None


def test_exact_duplicates_after_normalisation():
    rows = [make_row(0), make_row(1, problem=make_row(0)["problem"].replace(" ", "  ")), make_row(2)]
    drops = find_exact_duplicates(rows, DedupConfig())
    assert list(drops) == [1]
    assert drops[1].reason == "exact_duplicate" and drops[1].match_id == "r0"


def test_near_duplicates():
    base = "縦の長さが 12 cm、横の長さが 8 cm の長方形がある。この長方形の周の長さと面積をそれぞれ求めなさい。"
    near = base.replace("それぞれ", "")  # one word removed: still the same problem
    other = "1 個 120 円のりんごを 5 個と 1 個 80 円のみかんを 3 個買ったときの代金の合計を求めなさい。"
    rows = [make_row(0, problem=base), make_row(1, problem=near), make_row(2, problem=other)]
    drops = find_near_duplicates(rows, DedupConfig(near_threshold=0.7))
    assert list(drops) == [1]
    assert drops[1].reason == "near_duplicate" and drops[1].match_id == "r0"
    assert find_near_duplicates(rows, DedupConfig(near_threshold=0.95)) == {}
    with pytest.raises(ValueError, match="num_perm"):
        DedupConfig(near_threshold=0.99, num_perm=32)


def test_decontamination():
    evals = [{"id": "ev-1", "problem": "連立方程式 $x + y = 7$, $x - y = 1$ を解き、$x$ の値を求めなさい。"},
             {"id": "ev-2", "problem": "次の計算をしなさい。$(-3) + 4 \\times 5$"}]
    index = EvalIndex(evals, DecontamConfig(ngram=8, min_shared=0.5))
    leaked = make_row(0, problem="【問題】連立方程式 $x + y = 7$, $x - y = 1$ を解き、$x$ の値を求めなさい。")
    drop = index.find(leaked)
    assert drop.reason == "contaminated" and drop.match_id == "ev-1"
    # shared boilerplate alone ("次の計算をしなさい") is not contamination at a 50% share
    assert index.find(make_row(1, problem="次の計算をしなさい。$12 \\div (-4) - 7$")) is None
    # ... but it is under the any-n-gram rule
    strict = EvalIndex(evals, DecontamConfig(ngram=8, min_shared=0.0))
    assert strict.find(make_row(1, problem="次の計算をしなさい。$12 \\div (-4) - 7$")).match_id == "ev-2"


@pytest.mark.parametrize("text, label, reason", [
    ('{"verdict": "consistent", "reason": "checks out"}', "consistent", "checks out"),
    ('thinking... {"verdict": "consistent"} final: {"verdict": "ill-posed", "reason": "no data"}',
     "ill_posed", "no data"),
    ("Verdict: Inconsistent\nReason: 3 times 5 is 15", "inconsistent", "3 times 5 is 15"),
    ("**Verdict**: ill posed", "ill_posed", ""),
    ("Consistent. The algebra is right.", "consistent", ""),
])
def test_parse_verdict(text, label, reason):
    verdict = parse_verdict(text)
    assert verdict.label == label and verdict.reason == reason


@pytest.mark.parametrize("text", ["", "I think the answer is right.", '{"verdict": "maybe"}', '{"verdict": 1',
                                  "The solution is consistently wrong"])
def test_parse_verdict_rejects_malformed(text):
    verdict = parse_verdict(text)
    assert verdict.label is None and "unparseable" in verdict.reason


def test_conversation_has_examples_and_truncates():
    row = make_row(0, solution="a" * 5000 + "THE END")
    conv = verdict_conversation(row, max_solution_chars=1000)
    assert [m["role"] for m in conv] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert '"inconsistent"' in conv[2]["content"] and '"consistent"' in conv[4]["content"]
    assert "THE END" in conv[-1]["content"] and len(conv[-1]["content"]) < 1200


def config(**kwargs) -> JudgeConfig:
    data = {"engine": {"model": "fake", "backend": "hf"}, **kwargs}
    return build(JudgeConfig, data, "judge")


def test_curate_all_reasons_and_counts_add_up():
    evals = [{"id": "ev-9", "problem": "方程式 $7x - 4 = 24$ を解きなさい。答えは整数である。"}]
    rows = [make_row(i) for i in range(7)]
    rows += [
        make_row(7, answer="わからない"),                                   # answer_unparseable
        make_row(8, problem="Find $x$ if $3x=15$, then double it."),         # wrong_language
        make_row(9, problem=rows[0]["problem"]),                             # exact_duplicate
        make_row(10, problem="方程式 $7x - 4 = 24$ を解きなさい。答えは整数である。"),  # contaminated
    ]
    replies = ['{"verdict": "consistent", "reason": "ok"}', '{"verdict": "inconsistent", "reason": "bad step"}',
               "Verdict: ill-posed", "no idea", '{"verdict": "consistent"}', '{"verdict": "consistent"}',
               '{"verdict": "consistent"}']
    engine = FakeEngine(replies)
    result = curate(rows, evals, config(), engine_factory=lambda spec: engine)
    m = result.metrics
    assert m["input_rows"] == 11 and m["kept"] + sum(m[f"drop_{r}"] for r in DROP_REASONS) == 11
    assert m["kept"] + m["dropped"] == 11
    by_id = {r["id"]: r["drop_reason"] for r in result.dropped}
    assert by_id == {"r1": "judge_inconsistent", "r2": "judge_ill_posed", "r3": "judge_error",
                     "r7": "answer_unparseable", "r8": "wrong_language", "r9": "exact_duplicate",
                     "r10": "contaminated"}
    assert next(r for r in result.dropped if r["id"] == "r10")["match_id"] == "ev-9"
    assert [r["id"] for r in result.kept] == ["r0", "r4", "r5", "r6"]
    assert result.kept[0]["verdict"] == "consistent" and result.kept[0]["reason"] == "ok"
    assert m["judge_errors"] == 1 and m["judged"] == 7 and m["judge_parse_rate"] == round(6 / 7, 4)
    # the LLM saw only the survivors of the cheap filters, in one batched call at temperature 0
    (conversations, sampling), = engine.calls
    assert len(conversations) == 7 and sampling.temperature == 0.0
    assert engine.closed
    assert result.coverage == [{"field": "algebra", "difficulty": "easy", "cell": "algebra / easy", "kept": 4}]


def test_judge_errors_can_be_kept():
    rows = [make_row(0), make_row(1)]
    engine = FakeEngine(["garbage", '{"verdict": "consistent"}'])
    result = curate(rows, [], config(keep_judge_errors=True), engine_factory=lambda spec: engine)
    assert [r["verdict"] for r in result.kept] == ["judge_error", "consistent"]
    assert result.metrics["judge_errors"] == 1 and result.metrics["drop_judge_error"] == 0


def test_answer_agreement():
    rows = [make_row(0, answer="5"), make_row(1, answer="5")]
    engine = FakeEngine(['{"verdict": "consistent"}'] * 2 + [
        ["\\boxed{5}", "\\boxed{5.0}", "\\boxed{4}"],          # 2 of 3 agree
        ["\\boxed{4}", "no answer", "\\boxed{5}"],           # 1 of 3 agree
    ])
    cfg = config(agreement={"enabled": True, "k": 3, "min_agreement": 0.6})
    result = curate(rows, [], cfg, engine_factory=lambda spec: engine)
    assert [r["id"] for r in result.kept] == ["r0"]
    assert result.dropped[0]["drop_reason"] == "answer_disagreement"
    assert result.kept[0]["agreement"] == pytest.approx(2 / 3)
    assert engine.calls[1][1].n == 3
    # tokens the model generated, verdicts and re-solves alike (the fake counts characters as tokens)
    replies = 2 * len('{"verdict": "consistent"}') + sum(map(len, ["\\boxed{5}", "\\boxed{5.0}", "\\boxed{4}",
                                                                  "\\boxed{4}", "no answer", "\\boxed{5}"]))
    assert result.metrics["tokens_generated"] == replies


def test_no_engine_when_nothing_survives():
    def factory(spec):
        raise AssertionError("the engine must not load when every row is already dropped")

    result = curate([make_row(0, answer="")], [], config(), engine_factory=factory)
    assert result.metrics["drop_missing_field"] == 1


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="judge.dedup.bogus"):
        config(dedup={"bogus": 1})
    with pytest.raises(ConfigError, match="keep_verdicts"):
        config(keep_verdicts=["great"])
    with pytest.raises(ConfigError, match="engine is required"):
        build(JudgeConfig, {"llm_judge": True}, "judge")
    assert build(JudgeConfig, {"llm_judge": False}, "judge").engine is None
    assert dataclasses.replace(config(), llm_judge=False).sampling.temperature == 0.0
