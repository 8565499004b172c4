"""Scores for a predictions folder: accuracy (overall, per category), pass@k, cons@k, and the report table.

    metrics, plot = evaluate(config, predictions_dir, gold_path)   # flat dict, list of {k, cons, pass}
    print(render_table(["metrics/evaluate-base.json", "metrics/evaluate-final.json"]))

- accuracy grades `predictions.jsonl`'s `output` against the gold row, with our grader
  (`ftllm.grade.grade_row`) or, when `external_grader` is set, the official command; both files are
  read by the official rules (`ftllm.grade.files`: unknown keys skip a row, ids match by JSON value,
  a repeated id overwrites, a null output or unknown method stops the run naming file and line).
- pass@k is the unbiased estimator 1 - C(n-c, k) / C(n, k) over a problem's n samples, c of them right.
- cons@k is the majority vote of k samples, averaged over k-subsets (all of them when there are
  few, else `cons_subsets` seeded random draws). It reuses the equivalence classes written in
  samples.parquet, so only one representative per class is graded: a subset's vote is a count.
Both are reported only for k <= n (the smallest n over the problems).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import shlex
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ftllm.io import InputError, read_json, read_jsonl, read_parquet

TABLE_KS = (1, 40, 160)


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """YAML keys under `evaluate`."""

    ks: list[int] = (1, 4, 16, 40, 160)  # pass@k / cons@k points; those above n are left out
    cons_subsets: int = 1000  # random k-subsets per problem when there are more than `cons_exhaustive_max`
    cons_exhaustive_max: int = 5000  # enumerate every k-subset when C(n, k) is at most this
    seed: int = 0  # draws of the random subsets
    # official grader, e.g. "math-eval {predictions} {gold} -o {verdicts}": it writes its JSON report
    # (or a JSONL of {id, correct}) to {verdicts}. null: our grader (ftllm.grade).
    external_grader: str | None = None
    workers: int = 4  # grading processes
    timeout_s: int = 5  # per parse/verify (Math-Verify alarm)

    def __post_init__(self) -> None:
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"evaluate.ks must be positive integers, got {list(self.ks)}")
        if self.cons_subsets < 1:
            raise ValueError("evaluate.cons_subsets must be >= 1")
        if self.external_grader is not None:
            for field in ("{predictions}", "{gold}", "{verdicts}"):
                if field not in self.external_grader:
                    raise ValueError(f"evaluate.external_grader must contain {field}")


# --- estimators -------------------------------------------------------------------------

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k: the chance that k of n samples (c right) hold at least one right one."""
    if k > n:
        raise ValueError(f"k={k} exceeds n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_correct(
    subset: Sequence[int], labels: Sequence[int], logprobs: Sequence[float], correct: dict[int, bool],
) -> bool:
    """The vote of `subset` (largest class, then summed logprob, then first sample) is right."""
    size: dict[int, int] = defaultdict(int)
    mass: dict[int, float] = defaultdict(float)
    first: dict[int, int] = {}
    for i in subset:
        lab = labels[i]
        if lab < 0:
            continue
        size[lab] += 1
        mass[lab] += logprobs[i]
        first.setdefault(lab, i)
    if not size:
        return False
    winner = min(size, key=lambda c: (-size[c], -mass[c], first[c]))
    return bool(correct.get(winner, False))


def cons_at_k(labels: Sequence[int], logprobs: Sequence[float], correct: dict[int, bool], k: int,
              max_exhaustive: int = 5000, draws: int = 1000, rng: random.Random | None = None) -> float:
    """Majority-vote accuracy of k samples out of n, over all k-subsets or `draws` random ones."""
    n = len(labels)
    if k > n:
        raise ValueError(f"k={k} exceeds n={n}")
    if math.comb(n, k) <= max_exhaustive:
        subsets = itertools.combinations(range(n), k)
    else:
        rng = rng or random.Random(0)
        subsets = (sorted(rng.sample(range(n), k)) for _ in range(draws))
    hits = [majority_correct(s, labels, logprobs, correct) for s in subsets]
    return float(np.mean(hits))


# --- grading --------------------------------------------------------------------------------

def _grade_pair(output: str, gold_row: dict, timeout_s: int) -> bool:
    from ftllm.grade import grade_row

    return grade_row({"output": output}, gold_row, timeout_s)


def grade_ours(pairs: list[tuple[str, dict]], config: EvaluateConfig, desc: str | None = None) -> list[bool]:
    from ftllm.infer.pool import run_guarded

    verdicts = run_guarded(_grade_pair, [(o, g, config.timeout_s) for o, g in pairs], config.workers,
                           hard_timeout_s=8 * config.timeout_s + 10, desc=desc)
    return [bool(v) for v in verdicts]  # a killed task (None) is wrong, as in the grader


def grade_external(pred_path: Path, gold_path: Path, gold: dict, command: str) -> list[bool]:
    """Run the official grader on the files themselves; a gold row without a verdict is wrong.

    It may write the official report (`math-eval … -o {verdicts}`: JSON with `detailed_results`, id -> bool)
    or JSONL rows of {id, correct}.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out_path = Path(tmp) / "verdicts.json"
        cmd = command.format(predictions=shlex.quote(str(pred_path)), gold=shlex.quote(str(gold_path)),
                             verdicts=shlex.quote(str(out_path)))
        proc = subprocess.run(cmd, shell=True, capture_output=True, text=True)
        if proc.returncode != 0:
            raise InputError(f"external grader failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:] }")
        text = out_path.read_text(encoding="utf-8") if out_path.exists() else ""
        try:
            report = json.loads(text)
        except json.JSONDecodeError:
            report = None
        if isinstance(report, dict) and "detailed_results" in report:
            verdicts = {str(k): bool(v) for k, v in report["detailed_results"].items()}
        else:
            verdicts = {str(r["id"]): bool(r["correct"])
                        for r in read_jsonl(out_path, required=("id", "correct"), allow_empty=True)}
    return [verdicts.get(str(pid), False) for pid in gold]


# --- the evaluation ------------------------------------------------------------------------

def evaluate(config: EvaluateConfig, predictions_dir: str | Path, gold_path: str | Path) -> tuple[dict, list[dict]]:
    """Flat metrics and the accuracy-vs-k plot rows for one predictions folder.

    Accuracy follows the official file rules (`ftllm.grade.files`): every gold row counts, a missing or
    skipped prediction is wrong, predictions without a gold row are ignored.
    """
    from ftllm.grade.files import check_row, read_rows

    predictions_dir, gold_path = Path(predictions_dir), Path(gold_path)
    pred_path = predictions_dir / "predictions.jsonl"
    gold = read_rows(gold_path, "gold")
    if not gold:
        needed = ", ".join(("id", "problem", "solution", "category", "unit"))
        raise InputError(f"{gold_path}: no usable gold row (each needs {needed})")
    predictions = read_rows(pred_path, "prediction")
    paired = [(pid, predictions[pid]) for pid in gold if pid in predictions]
    for pid, pred in paired:
        check_row(pred, gold[pid])
    if config.external_grader:
        verdicts = grade_external(pred_path, gold_path, gold, config.external_grader)
    else:
        graded = grade_ours([(pred["output"], gold[pid]) for pid, pred in paired], config, desc="grade")
        by_id = {pid: ok for (pid, _), ok in zip(paired, graded)}
        verdicts = [by_id.get(pid, False) for pid in gold]
    metrics = accuracy_metrics(list(gold.values()), verdicts)
    metrics["missing_predictions"] = len(gold) - len(paired)
    samples_path = predictions_dir / "samples.parquet"
    plot: list[dict] = []
    if samples_path.exists():
        gold_by_str_id = {str(k): v for k, v in gold.items()}
        sample_metrics, plot = sampling_metrics(config, read_parquet(samples_path), gold_by_str_id)
        metrics.update(sample_metrics)
    return metrics, plot


def accuracy_metrics(gold_rows: list[dict], verdicts: list[bool]) -> dict:
    """Overall and per-category accuracy over the gold rows (official: correct / gold rows, 0 if none)."""
    metrics = {"problems": len(gold_rows), "accuracy": float(np.mean(verdicts)) if verdicts else 0.0}
    by_category: dict[str, list[bool]] = defaultdict(list)
    for g, ok in zip(gold_rows, verdicts):
        by_category[str(g.get("category") or "none")].append(ok)
    for category in sorted(by_category):
        metrics[f"accuracy/{category}"] = float(np.mean(by_category[category]))
    return metrics


def sampling_metrics(config: EvaluateConfig, samples: list[dict], gold: dict[str, dict]) -> tuple[dict, list[dict]]:
    """pass@k and cons@k from the per-sample classes; one grading per class representative."""
    problems: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        problems[str(s["id"])].append(s)
    for rows in problems.values():
        rows.sort(key=lambda s: s["sample"])
    reps = {}  # (id, class) -> representative answer
    for pid, rows in problems.items():
        for s in rows:
            if s["class_index"] >= 0 and s.get("answer"):
                reps.setdefault((pid, s["class_index"]), s["answer"])
    keys = [key for key in reps if key[0] in gold]
    verdicts = grade_ours([(reps[key], gold[key[0]]) for key in keys], config, desc="grade classes")
    correct: dict[str, dict[int, bool]] = defaultdict(dict)
    for (pid, c), ok in zip(keys, verdicts):
        correct[pid][c] = ok
    scored = [pid for pid in problems if pid in gold]
    n_min = min((len(problems[pid]) for pid in scored), default=0)
    metrics: dict = {"samples_per_problem": n_min}
    plot = []
    rng = random.Random(config.seed)
    for k in sorted(set(config.ks)):
        if k > n_min:
            continue
        passes, cons = [], []
        for pid in scored:
            labels = [int(s["class_index"]) for s in problems[pid]]
            logprobs = [float(s["logprob"] or 0.0) for s in problems[pid]]
            c = sum(1 for lab in labels if correct[pid].get(lab, False))
            passes.append(pass_at_k(len(labels), c, k))
            cons.append(cons_at_k(labels, logprobs, correct[pid], k,
                                  config.cons_exhaustive_max, config.cons_subsets, rng))
        metrics[f"pass@{k}"], metrics[f"cons@{k}"] = float(np.mean(passes)), float(np.mean(cons))
        plot.append({"k": k, "cons": metrics[f"cons@{k}"], "pass": metrics[f"pass@{k}"]})
    return metrics, plot


# --- the reference table -------------------------------------------------------------------

def render_table(metrics_paths: Sequence[str | Path], ks: Sequence[int] = TABLE_KS) -> str:
    """Markdown table: one row per metrics file (named after it), cons@k columns, "—" where k > n."""
    header = "| model | accuracy | " + " | ".join(f"cons@{k}" for k in ks) + " |"
    lines = [header, "|" + "---|" * (len(ks) + 2)]
    for path in metrics_paths:
        metrics = read_json(path)
        name = Path(path).stem.removeprefix("evaluate-")
        cells = [_pct(metrics.get("accuracy"))] + [_pct(metrics.get(f"cons@{k}")) for k in ks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def evaluate_stage(config: EvaluateConfig, predictions_dir: str | Path, gold_path: str | Path,
                   plot: str | Path | None = None) -> dict:
    """The `evaluate` stage: grade, write the accuracy-vs-k rows to `plot`; returns the flat metrics."""
    from ftllm.io import write_json

    result, points = evaluate(config, predictions_dir, gold_path)
    if plot is not None:
        write_json(plot, points)
    return result
