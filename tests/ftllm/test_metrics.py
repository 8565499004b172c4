"""Estimators against brute-force enumeration; the evaluation on a hand-made predictions folder."""
import itertools
import json
import math
import random
import sys

import pytest

from ftllm.config import ConfigError, build
from ftllm.evaluate import EvaluateConfig, cons_at_k, evaluate, majority_correct, pass_at_k, render_table
from ftllm.io import InputError, write_jsonl, write_parquet


@pytest.mark.parametrize("n, c", [(5, 0), (5, 1), (5, 3), (6, 6), (8, 2)])
def test_pass_at_k_equals_enumeration(n, c):
    right = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), k))
        brute = sum(any(right[i] for i in s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(brute)
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_cons_at_k_equals_enumeration():
    labels = [0, 1, 1, -1, 0, 2, 1]
    logprobs = [-1.0, -2.0, -0.5, 0.0, -3.0, -0.1, -1.0]
    correct = {0: True, 1: False, 2: True}
    for k in range(1, len(labels) + 1):
        brute = []
        for s in itertools.combinations(range(len(labels)), k):
            counts = {lab: sum(1 for i in s if labels[i] == lab) for lab in {labels[i] for i in s if labels[i] >= 0}}
            if not counts:
                brute.append(False)
                continue
            mass = {lab: sum(logprobs[i] for i in s if labels[i] == lab) for lab in counts}
            first = {lab: min(i for i in s if labels[i] == lab) for lab in counts}
            win = min(counts, key=lambda lab: (-counts[lab], -mass[lab], first[lab]))
            brute.append(correct[win])
        assert cons_at_k(labels, logprobs, correct, k) == pytest.approx(sum(brute) / len(brute))


def test_cons_at_k_sampling_is_seeded_and_close():
    rng = random.Random(1)
    labels = [rng.randrange(3) for _ in range(30)]
    correct = {0: True, 1: False, 2: False}
    exact = cons_at_k(labels, [0.0] * 30, correct, 5)  # C(30,5)=142506: random draws here
    again = cons_at_k(labels, [0.0] * 30, correct, 5, rng=None)
    assert exact == again
    full = cons_at_k(labels, [0.0] * 30, correct, 5, max_exhaustive=10**6)
    assert exact == pytest.approx(full, abs=0.05)


def test_majority_ignores_unparseable():
    assert not majority_correct([0, 1], [-1, -1], [0.0, 0.0], {})
    assert majority_correct([0, 1, 2], [-1, 0, -1], [0.0] * 3, {0: True})


def _folder(tmp_path):
    gold = [
        {"id": "a", "problem": "p", "category": "中1", "unit": "u", "solution": "$3$"},
        {"id": "b", "problem": "p", "category": "IA", "unit": "u", "solution": "$2x+2$", "evaluation_method": "strict"},
        {"id": "c", "problem": "p", "category": "IA", "unit": "u", "solution": ["$1$", "$-1$"]},
    ]
    preds = [{**gold[0], "output": "\\boxed{3}"}, {**gold[1], "output": "\\boxed{2(x+1)}"},
             {**gold[2], "output": "\\boxed{-1}"}]
    samples = []
    for pid, answers in (("a", ["$3$", "$4$", "$3$", None]), ("b", ["$2(x+1)$", "$2x+2$", "$2(x+1)$", "$2(x+1)$"]),
                         ("c", ["$-1$", "$5$", "$5$", "$-1$"])):
        classes = {}
        for j, ans in enumerate(answers):
            label = -1 if ans is None else classes.setdefault(ans, len(classes))
            samples.append({"id": pid, "sample": j, "text": "", "num_tokens": 1, "logprob": -float(j),
                            "answer": ans, "class_index": label, "class_size": 0})
    out = tmp_path / "pred"
    out.mkdir()
    write_jsonl(out / "predictions.jsonl", preds)
    write_parquet(out / "samples.parquet", samples)
    write_jsonl(tmp_path / "gold.jsonl", gold)
    return out, tmp_path / "gold.jsonl"


def test_evaluate_reports_accuracy_pass_and_cons(tmp_path):
    pred, gold = _folder(tmp_path)
    metrics, plot = evaluate(EvaluateConfig(ks=(1, 2, 4, 8), workers=1), pred, gold)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["accuracy/中1"] == 1.0 and metrics["accuracy/IA"] == 0.5
    assert metrics["samples_per_problem"] == 4 and "cons@8" not in metrics
    # a: 2 of 4 right; b (strict): 1 of 4; c: 2 of 4
    assert metrics["pass@1"] == pytest.approx((0.5 + 0.25 + 0.5) / 3)
    assert metrics["cons@4"] == pytest.approx((1 + 0 + 1) / 3)  # c: tie 2-2, class -1 has the larger logprob
    assert [p["k"] for p in plot] == [1, 2, 4] and set(plot[0]) == {"k", "cons", "pass"}


FAKE_GRADER = """
import json, sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
gold = {json.loads(l)["id"]: json.loads(l) for l in open(args["--gold"]) if l.strip()}
with open(args["--out"], "w") as f:
    for line in open(args["--pred"]):
        row = json.loads(line)
        correct = row["output"] == "\\\\boxed{" + str(gold[row["id"]]["solution"]).strip("$") + "}"
        f.write(json.dumps({"id": row["id"], "correct": correct}) + "\\n")
"""


def test_external_grader_gives_the_same_report_format(tmp_path):
    pred, gold = _folder(tmp_path)
    script = tmp_path / "fake_math_eval.py"
    script.write_text(FAKE_GRADER, encoding="utf-8")
    command = f"{sys.executable} {script} --pred {{predictions}} --gold {{gold}} --out {{verdicts}}"
    ours, _ = evaluate(EvaluateConfig(ks=(1,), workers=1), pred, gold)
    theirs, _ = evaluate(EvaluateConfig(ks=(1,), workers=1, external_grader=command), pred, gold)
    assert set(ours) == set(theirs)
    assert theirs["accuracy"] == pytest.approx(1 / 3)  # the fake grader only accepts exact strings
    failing = f"{sys.executable} -c 'raise SystemExit(3)' {{predictions}}{{gold}}{{verdicts}}"
    bad = EvaluateConfig(ks=(1,), external_grader=failing)
    with pytest.raises(InputError, match="external grader failed"):
        evaluate(bad, pred, gold)


def test_config_checks():
    with pytest.raises(ConfigError, match="evaluate.ks"):
        build(EvaluateConfig, {"ks": [0]}, "evaluate")
    with pytest.raises(ConfigError, match="evaluate.bogus"):
        build(EvaluateConfig, {"bogus": 1}, "evaluate")


def test_render_table_marks_missing_k(tmp_path):
    (tmp_path / "evaluate-base.json").write_text(json.dumps({"accuracy": 0.25, "cons@1": 0.2, "cons@40": 0.3}))
    (tmp_path / "evaluate-final.json").write_text(json.dumps({"accuracy": 0.5, "cons@1": 0.4}))
    table = render_table([tmp_path / "evaluate-base.json", tmp_path / "evaluate-final.json"])
    lines = table.splitlines()
    assert lines[0] == "| model | accuracy | cons@1 | cons@40 | cons@160 |"
    assert lines[2] == "| base | 25.0 | 20.0 | 30.0 | — |"
    assert lines[3] == "| final | 50.0 | 40.0 | — | — |"


def _files(tmp_path, gold_lines, pred_lines):
    (tmp_path / "pred").mkdir(exist_ok=True)
    (tmp_path / "gold.jsonl").write_text("\n".join(gold_lines) + "\n", encoding="utf-8")
    (tmp_path / "pred" / "predictions.jsonl").write_text("\n".join(pred_lines) + "\n", encoding="utf-8")
    return tmp_path / "pred", tmp_path / "gold.jsonl"


def _gold(pid, solution="$3$", **extra):
    return json.dumps({"id": pid, "problem": "p", "solution": solution, "category": "c", "unit": "u", **extra})


def test_official_file_rules(tmp_path):
    pred, gold = _files(tmp_path, [_gold(1), _gold("1"), _gold(2), _gold(3), '{"id": 4, "solution": "$3$"}'], [
        json.dumps({"id": 1, "output": "\\boxed{3}"}),
        json.dumps({"id": "1", "output": "\\boxed{4}"}),  # ids match by JSON value: "1" is not 1
        json.dumps({"id": 2, "output": "\\boxed{3}", "reasoning": "..."}),  # unknown key: skipped, so missing
        json.dumps({"id": 3, "output": "\\boxed{4}"}),
        json.dumps({"id": 3, "output": "\\boxed{3}"}),  # a repeated id overwrites
        "not json",
        json.dumps({"id": 9, "output": "\\boxed{3}"}),  # no gold row: ignored
    ])
    metrics, _ = evaluate(EvaluateConfig(ks=(1,), workers=1), pred, gold)
    assert metrics["problems"] == 4  # gold id 4 lacks problem/category/unit: skipped, as the grader does
    assert metrics["accuracy"] == pytest.approx(2 / 4) and metrics["missing_predictions"] == 1


@pytest.mark.parametrize("gold_line, pred_line, where", [
    (_gold(1), json.dumps({"id": 1, "output": None}), "predictions.jsonl:1: output must be a string, got null"),
    (_gold(1, evaluation_method="fuzzy"), json.dumps({"id": 1, "output": "3"}), "gold.jsonl:1: evaluation_method"),
])
def test_official_aborts_stop_with_file_and_line(tmp_path, gold_line, pred_line, where):
    pred, gold = _files(tmp_path, [gold_line], [pred_line])
    with pytest.raises(InputError, match=where):
        evaluate(EvaluateConfig(ks=(1,), workers=1), pred, gold)


def test_external_grader_reads_the_official_report(tmp_path):
    pred, gold = _files(tmp_path, [_gold(1), _gold(2)], [json.dumps({"id": 1, "output": "x"})])
    script = tmp_path / "report.py"
    script.write_text("import json, sys\n"
                      "json.dump({'overall_accuracy': 0.5, 'detailed_results': {'1': True, '2': False}},"
                      " open(sys.argv[sys.argv.index('-o') + 1], 'w'))\n", encoding="utf-8")
    command = f"{sys.executable} {script} {{predictions}} {{gold}} -o {{verdicts}}"
    metrics, _ = evaluate(EvaluateConfig(ks=(1,), workers=1, external_grader=command), pred, gold)
    assert metrics["accuracy"] == 0.5
