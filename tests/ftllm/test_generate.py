"""generate library: grid, prompts (incl. harmony rendering), parsing, sharding and resume with a scripted engine."""
from __future__ import annotations

import json

import pytest

from ftllm.config import ConfigError, EngineSpec, SamplingSpec, build
from ftllm.engine.base import Completion, Engine, render_chat
from ftllm.generate import GenerateConfig, generate_shards
from ftllm.generate.grid import (
    CURRICULUM,
    Cell,
    build_grid,
    build_items,
    group_by_cell,
    owned_shards,
    parse_shard_option,
    shard_seed,
    split_shards,
)
from ftllm.generate.parse import ParseFailure, clean_answer, parse_teacher_text, split_reasoning
from ftllm.generate.prompts import BUILTIN, format_tagged, load_prompt_set, render_conversation
from ftllm.generate.run import rejects_path, shard_path
from ftllm.io import InputError, read_parquet, read_records

# A small harmony-style template in the shape of gpt-oss's: the system message carries
# `Reasoning: …` from the reasoning_effort kwarg, our system text becomes developer instructions.
HARMONY_TEMPLATE = (
    "<|start|>system<|message|>You are ChatGPT.\nReasoning: {{ reasoning_effort | default('medium') }}\n"
    "# Valid channels: analysis, commentary, final.<|end|>"
    "{% for m in messages %}"
    "{% if m.role == 'system' %}<|start|>developer<|message|># Instructions\n\n{{ m.content }}<|end|>"
    "{% elif m.role == 'assistant' %}<|start|>assistant<|channel|>final<|message|>{{ m.content }}<|end|>"
    "{% else %}<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|start|>assistant{% endif %}"
)

GOOD = "<problem>2x+3=7 を解け。</problem>\n<solution>2x=4 より x=2。</solution>\n<answer>2</answer>"


def config(**over) -> GenerateConfig:
    values = dict(
        teacher={"model": "unused", "backend": "hf"},
        sampling={"max_new_tokens": 8, "skip_special_tokens": False},
        fields={"中1": ["一次方程式", "比例と反比例"], "IIB": ["数列"]},
        difficulties=[1, 7],
        tool_use=[False, True],
        samples_per_cell=3,
        shard_size=5,
        seed=11,
    )
    values.update(over)
    return build(GenerateConfig, values, "generate")


# --- config and grid -------------------------------------------------------------------------

def test_config_defaults_to_the_curriculum_and_validates_keys():
    cfg = build(GenerateConfig, {"teacher": {"model": "m"}}, "generate")
    assert cfg.fields == CURRICULUM and cfg.difficulties == tuple(range(1, 11)) and cfg.tool_use == (False, True)
    assert not cfg.sampling.skip_special_tokens
    units = {u for us in CURRICULUM.values() for u in us}
    assert {"一次方程式", "連立方程式", "一次関数", "二次方程式", "二次関数", "場合の数と確率", "数列", "微分", "積分",
            "ベクトル", "複素数平面"} <= units
    with pytest.raises(ConfigError, match="generate.sampels_per_cell"):
        build(GenerateConfig, {"teacher": {"model": "m"}, "sampels_per_cell": 2}, "generate")
    with pytest.raises(ConfigError, match="difficulties"):
        config(difficulties=[0, 3])
    with pytest.raises(ConfigError, match="sampling.n"):
        config(sampling={"n": 4})
    with pytest.raises(ConfigError, match="fields.中1"):
        config(fields={"中1": []})


def test_grid_covers_every_condition_in_params_order():
    cells = build_grid({"中1": ["a", "b"], "IA": ["c"]}, [1, 5, 10], [False, True])
    assert len(cells) == 3 * 3 * 2
    assert cells[0] == Cell("中1", "a", 1, False) and cells[1] == Cell("中1", "a", 1, True)
    assert cells[-1] == Cell("IA", "c", 10, True)
    assert cells[0].key == "中1/a/d01/notool"


def test_ids_and_shards_are_deterministic():
    cells = build_grid({"中1": ["a", "b"]}, [1, 2], [False, True])
    items = build_items(cells, 3, seed=0)
    assert [i.id for i in items] == [i.id for i in build_items(cells, 3, seed=0)]
    assert len({i.id for i in items}) == len(items) == 24
    assert {i.id for i in build_items(cells, 3, seed=1)}.isdisjoint(i.id for i in items)
    shards = split_shards(items, 5)
    assert [len(s) for s in shards] == [5, 5, 5, 5, 4] and sum(shards, []) == items
    assert shard_seed(0, 1) == shard_seed(0, 1) and len({shard_seed(0, k) for k in range(50)}) == 50
    assert owned_shards(5, 1, 2) == [1, 3] and sorted(owned_shards(5, 0, 2) + owned_shards(5, 1, 2)) == list(range(5))
    assert [len(g) for g in group_by_cell(shards[0])] == [3, 2]
    assert parse_shard_option("2/4") == (2, 4)
    with pytest.raises(ValueError):
        parse_shard_option("4/4")


# --- prompts -------------------------------------------------------------------------------

def test_prompt_asks_for_the_condition_in_tags():
    messages = render_conversation(BUILTIN["ja"], Cell("中2", "連立方程式", 7, False), "ja")
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "中2" in user and "連立方程式" in user and "7 / 10" in user and BUILTIN["ja"].rubric[7] in user
    assert BUILTIN["ja"].tool_forbidden in user and "<problem>" in user and "</answer>" in user
    assert format_tagged(**BUILTIN["ja"].example) in user
    allowed = render_conversation(BUILTIN["en"], Cell("中2", "連立方程式", 7, True), "en")[1]["content"]
    assert "Python" in allowed and "Unit: 連立方程式" in allowed


def test_prompt_overrides_from_file_and_params(tmp_path):
    path = tmp_path / "prompts.yaml"
    path.write_text("user: 'U {{ unit }} {{ rubric }}'\nrubric: {3: とても易しい}\n", encoding="utf-8")
    prompts = load_prompt_set("ja", str(path), system_template="")
    messages = render_conversation(prompts, Cell("中1", "文字と式", 3, True), "ja")
    assert messages == [{"role": "user", "content": "U 文字と式 とても易しい"}]
    with pytest.raises(InputError, match="unit_name"):
        render_conversation(load_prompt_set("ja", user_template="{{ unit_name }}"), Cell("中1", "x", 1, True), "ja")
    (tmp_path / "bad.yaml").write_text("usr: x\n", encoding="utf-8")
    with pytest.raises(InputError, match="unknown key"):
        load_prompt_set("ja", str(tmp_path / "bad.yaml"))


def test_harmony_template_puts_reasoning_effort_in_the_system_message(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    messages = render_conversation(BUILTIN["ja"], Cell("IIIC", "複素数平面", 9, False), "ja")
    ids = render_chat(tokenizer, messages, HARMONY_TEMPLATE, reasoning_effort="high")
    text = tokenizer.decode(ids)
    system = text.split("<|end|>")[0]
    assert system.startswith("<|start|>system") and "Reasoning: high" in system
    assert "# Instructions" in text and "複素数平面" in text and text.endswith("<|start|>assistant")


# --- parsing -------------------------------------------------------------------------------

def test_parse_plain_reply():
    parsed = parse_teacher_text("前置き\n" + GOOD + "\n以上")
    assert (parsed.problem, parsed.solution, parsed.answer, parsed.reasoning) == (
        "2x+3=7 を解け。", "2x=4 より x=2。", "2", "")
    assert not parsed.uses_python


def test_parse_think_tags_and_special_tokens():
    parsed = parse_teacher_text("<think>まず考える</think>" + GOOD + "<|im_end|><|im_start|>user <problem>x</problem>")
    assert parsed.reasoning == "まず考える" and parsed.answer == "2"
    with pytest.raises(ParseFailure, match="unclosed_think"):
        parse_teacher_text("<think>ずっと考える " + GOOD)


def test_parse_harmony_reply():
    raw = (
        "<|channel|>analysis<|message|>Need a linear equation. Check: 2*2+3=7.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>"
        + GOOD.replace("<answer>2", "<answer>$\\boxed{2}$")
        + "<|return|>"
    )
    parsed = parse_teacher_text(raw)
    assert parsed.reasoning == "Need a linear equation. Check: 2*2+3=7."
    assert parsed.problem == "2x+3=7 を解け。" and parsed.answer == "2"
    assert "<problem>" not in parsed.reasoning and "analysis" not in parsed.solution
    reasoning, final = split_reasoning(
        "<|channel|>analysis<|message|>a<|end|><|start|>assistant<|channel|>final<|message|>b")
    assert (reasoning, final) == ("a", "b")


@pytest.mark.parametrize(
    "raw, finish, reason",
    [
        ("<|channel|>analysis<|message|>thinking forever", "length", "truncated"),
        ("<|channel|>analysis<|message|>done<|end|>", "stop", "no_final_channel"),
        ("<|channel|>commentary to=python <|constrain|>code<|message|>print(1)<|call|>", "stop", "tool_call"),
        ("ただの文章です。", "stop", "missing_problem"),
        ("<problem>pppppppp</problem><answer>1</answer>", "stop", "missing_solution"),
        ("<problem>pppppppp</problem><solution>s</solution>", "stop", "missing_answer"),
        ("<problem>pppppppp</problem><solution>s</solution><answer>", "length", "truncated"),
        ("<problem>pppppppp</problem><solution>s</solution><answer> $ $ </answer>", "stop", "empty_answer"),
        ("<problem></problem><solution>s</solution><answer>1</answer>", "stop", "empty_problem"),
        ("<problem>問題文</problem><solution>解答</solution><answer>最終解答</answer>", "stop", "problem_too_short"),
        ("<problem>pppppppp</problem><solution>s</solution><answer>" + "x" * 300 + "</answer>", "stop",
         "answer_too_long"),
    ],
)
def test_parse_failures_have_reasons(raw, finish, reason):
    with pytest.raises(ParseFailure) as failure:
        parse_teacher_text(raw, finish)
    assert failure.value.reason == reason


def test_parse_tolerates_missing_closing_tags_in_order():
    parsed = parse_teacher_text("<problem>2x=6 を解け。\n<solution>x=3\n<answer>3", "stop")
    assert (parsed.problem, parsed.solution, parsed.answer) == ("2x=6 を解け。", "x=3", "3")
    parsed = parse_teacher_text("<problem>2x=6 を解け。</solution><solution>x=3</solution><answer>3</answer>")
    assert parsed.problem == "2x=6 を解け。" and parsed.solution == "x=3"
    with pytest.raises(ParseFailure, match="missing_solution"):
        parse_teacher_text("<solution>x=3</solution><problem>2x=6 を解け。</problem><answer>3</answer>")


def test_parse_open_answer_at_stop_copied_example_and_python():
    assert parse_teacher_text("<problem>pppppppp</problem><solution>s</solution><answer>42", "stop").answer == "42"
    example = BUILTIN["ja"].example
    with pytest.raises(ParseFailure, match="copied_example"):
        parse_teacher_text(format_tagged(**example), example_problem=example["problem"])
    near = BUILTIN["en"].example["problem"].replace("plus 4. Find $x$.", "plus 2.")
    with pytest.raises(ParseFailure, match="copied_example"):
        parse_teacher_text(format_tagged(near, "s", "1"), example_problem=BUILTIN["en"].example["problem"])
    other = "A bag holds 3 red and 5 blue balls. Two are drawn. Find the probability both are red."
    assert parse_teacher_text(format_tagged(other, "s", "3/28"), example_problem=BUILTIN["en"].example["problem"])
    code = "<problem>pppppppp</problem><solution>```python\nprint(6*7)\n```\nより 42</solution><answer>42</answer>"
    assert parse_teacher_text(code, tool_use=True).uses_python
    with pytest.raises(ParseFailure, match="python_forbidden"):
        parse_teacher_text(code, tool_use=False)
    assert clean_answer("\\boxed{\\frac{1}{2}}。") == "\\frac{1}{2}" and clean_answer("$x=3$") == "x=3"


# --- sharded runs with a scripted engine ---------------------------------------------------

class ScriptedEngine(Engine):
    """Replies from the prompt's condition: good tags, except difficulty 7 + tool use gives prose."""

    def __init__(self):
        self.spec = EngineSpec(model="scripted", backend="hf")
        self.tokenizer = None
        self.calls: list[tuple[int, SamplingSpec]] = []

    def generate_ids(self, prompts, sampling, on_finished=None):
        raise AssertionError("the stage must go through chat(), which renders the model's template")

    def chat(self, conversations, sampling, **kwargs):
        assert kwargs == {"reasoning_effort": "medium"}
        self.calls.append((len(conversations), sampling))
        outs = []
        for conversation in conversations:
            user = conversation[-1]["content"]
            bad = "7 / 10" in user and "Python" in user
            text = "わかりません" if bad else (
                f"<think>r</think><problem>{user[:40]}</problem><solution>s{sampling.seed}</solution><answer>1</answer>")
            outs.append([Completion(text + f" #{i}", 5, -1.0, "stop") for i in range(sampling.n)])
        return outs


def test_shards_rows_rejects_and_metrics(tmp_path):
    cfg = config()
    engine = ScriptedEngine()
    metrics = generate_shards(cfg, tmp_path / "raw", engine=engine)
    n_items = 3 * 2 * 2 * 3  # units x difficulties x tool_use x samples
    assert metrics["samples"] == n_items and metrics["shards_total"] == metrics["shards_done"] == 8
    assert metrics["rejected"] == metrics["reject.missing_problem"] == 3 * 3  # d07 + tool, 3 units x 3 samples
    assert metrics["kept"] == n_items - 9 and metrics["parse_yield"] == round(27 / 36, 4)
    assert metrics["cell.中1/一次方程式/d07/tool.rejected"] == 3 and metrics["cell.IIB/数列/d01/notool.kept"] == 3
    rows = read_records(tmp_path / "raw")  # rejects live in a subfolder, so they are not read as rows
    assert len(rows) == 27 and len({r["id"] for r in rows}) == 27
    row = rows[0]
    assert row["reasoning"] == "r" and row["answer"] == "1" and row["category"] == "中1" and row["tool_use"] is False
    assert row["raw_text"].startswith("<think>") and "一次方程式" in row["prompt"]
    rejects = read_parquet(rejects_path(tmp_path / "raw", 1))
    assert rejects and all(r["reason"] == "missing_problem" and r["raw_text"] for r in rejects)
    # samples of one cell are one prompt with n samples; each shard has its own seed
    assert all(s.n in (1, 2, 3) for _, s in engine.calls)
    assert len({s.seed for _, s in engine.calls}) == 8


def test_rerun_skips_complete_shards_and_worker_split(tmp_path):
    cfg = config()
    out = tmp_path / "raw"
    first = generate_shards(cfg, out, shard=(1, 3), engine=ScriptedEngine())
    assert first["shards_owned"] == first["shards_done"] == 3  # shards 1, 4, 7
    assert sorted(p.name for p in out.glob("shard-*.parquet")) == [
        "shard-00001.parquet", "shard-00004.parquet", "shard-00007.parquet"]
    shard_path(out, 4).unlink()  # an interrupted shard: only it is redone
    engine = ScriptedEngine()
    generate_shards(cfg, out, shard=(1, 3), engine=engine)
    # shard 4 holds items 20..24: 1 + 3 + 1 samples of three cells, so one call for n=1 (two prompts), one for n=3
    assert sorted((n, s.n) for n, s in engine.calls) == [(1, 3), (2, 1)]
    for worker in (0, 2):
        generate_shards(cfg, out, shard=(worker, 3), engine=ScriptedEngine())
    generate_shards(cfg, tmp_path / "whole", engine=ScriptedEngine())
    assert {r["id"]: r["solution"] for r in read_records(out)} == {
        r["id"]: r["solution"] for r in read_records(tmp_path / "whole")}
    # every shard done: no engine is built at all (the teacher model "unused" does not exist)
    assert generate_shards(cfg, out)["samples"] == 36


def test_harmony_teacher_needs_special_tokens_kept(tmp_path):
    engine = ScriptedEngine()
    engine.tokenizer = type("Tok", (), {"chat_template": HARMONY_TEMPLATE})()
    with pytest.raises(ConfigError, match="skip_special_tokens"):
        generate_shards(config(sampling={"skip_special_tokens": True}), tmp_path, engine=engine)
    assert generate_shards(config(), tmp_path / "ok", engine=engine)["kept"] == 27


def test_folder_of_another_plan_is_refused(tmp_path):
    generate_shards(config(), tmp_path, engine=ScriptedEngine())
    assert json.loads((tmp_path / "plan.json").read_text())["shards"] == 8
    with pytest.raises(InputError, match="different generate plan"):
        generate_shards(config(seed=12), tmp_path, engine=ScriptedEngine())
