"""The pipeline's closing summary: what each stage did, from the metrics and predictions it wrote.

    python -m ftllm.report [ROOT]       # after `dvc exp run -S profile=demo`; ROOT: the repo (default .)
    main_summary(Path("."))             # the same text, for a stage script to print

One line per stage (rows generated and kept, CPT/SFT loss first -> last, RL reward first -> last), then base
vs final on the eval set with 95% intervals:
- accuracy of the voted answer, a Wilson interval over problems;
- boxed-answer rate, the share of sampled answers with exactly one \\boxed{} (the RL `single_box` reward, the
  format the grader reads), with an interval from a bootstrap over problems, since samples of one problem are
  not independent; and the final - base difference with a paired bootstrap interval. A rise whose interval
  excludes zero is called learned, a fall likewise worse beyond noise, anything else within noise.
A stage whose metrics are missing shows as "not run" rather than stopping the summary.
"""
from __future__ import annotations

import math
import random
from pathlib import Path

from ftllm.io import InputError, read_json, read_parquet
from ftllm.train.rewards import single_box

BOOTSTRAP_RESAMPLES = 2000
Z95 = 1.959964


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (n = 0 gives (0, 1): nothing is known)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def cluster_bootstrap(groups: dict[str, tuple[int, int]], resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = 0) -> tuple[float, float, float]:
    """Pooled rate sum(hits)/sum(total) over groups (problem -> (hits, total)) and its 95% percentile
    interval, resampling whole groups."""
    keys = sorted(groups)
    if not keys or not sum(groups[k][1] for k in keys):
        return 0.0, 0.0, 1.0
    rate = sum(groups[k][0] for k in keys) / sum(groups[k][1] for k in keys)
    rng = random.Random(seed)
    draws = []
    for _ in range(resamples):
        picked = [groups[rng.choice(keys)] for _ in keys]
        total = sum(t for _, t in picked)
        draws.append(sum(h for h, _ in picked) / total if total else 0.0)
    draws.sort()
    return rate, _percentile(draws, 0.025), _percentile(draws, 0.975)


def paired_bootstrap(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """after - before of the pooled rates over the problems both have, with a 95% interval from resampling
    problems (the same draw for both models, so problem difficulty cancels)."""
    keys = sorted(set(before) & set(after))
    if not keys:
        return 0.0, -1.0, 1.0

    def rate(groups, picked):
        total = sum(groups[k][1] for k in picked)
        return sum(groups[k][0] for k in picked) / total if total else 0.0

    diff = rate(after, keys) - rate(before, keys)
    rng = random.Random(seed)
    draws = []
    for _ in range(resamples):
        picked = [rng.choice(keys) for _ in keys]
        draws.append(rate(after, picked) - rate(before, picked))
    draws.sort()
    return diff, _percentile(draws, 0.025), _percentile(draws, 0.975)


def boxed_by_problem(samples_path: Path) -> dict[str, tuple[int, int]]:
    """problem id -> (samples with exactly one \\boxed{}, samples), from predict's samples.parquet."""
    rows = read_parquet(samples_path)
    missing = [key for key in ("id", "text") if rows and key not in rows[0]]
    if missing:
        raise InputError(f"{samples_path}: no column {missing[0]!r}")
    groups: dict[str, list[int]] = {}
    for row, hit in zip(rows, single_box([str(r["text"] or "") for r in rows])):
        counts = groups.setdefault(str(row["id"]), [0, 0])
        counts[0] += int(hit)
        counts[1] += 1
    return {k: (h, t) for k, (h, t) in groups.items()}


def _read(path: Path) -> dict | None:
    return read_json(path) if path.exists() else None


def _first_last(history_path: Path, key: str) -> tuple[float | None, float | None]:
    history = _read(history_path)
    values = [row[key] for row in history or [] if isinstance(row, dict) and row.get(key) is not None]
    return (values[0], values[-1]) if values else (None, None)


def summarize(root: Path, models: tuple[str, str] = ("base", "final")) -> dict:
    """Every figure of the summary, read from the files the pipeline wrote under `root`."""
    m = root / "metrics"
    out: dict = {"stages": {}, "models": {}}
    if (g := _read(m / "generate.json")) is not None:
        rejects = {k.split(".", 1)[1]: v for k, v in g.items() if k.startswith("reject.") and v}
        out["stages"]["generate"] = {"samples": g.get("samples"), "parsed": g.get("kept"), "rejects": rejects}
    if (j := _read(m / "judge.json")) is not None:
        drops = {k[5:]: v for k, v in j.items() if k.startswith("drop_") and v}
        out["stages"]["judge"] = {"rows": j.get("input_rows"), "kept": j.get("kept"), "drops": drops}
    if (c := _read(m / "cpt.json")) is not None:
        out["stages"]["cpt"] = {"steps": c.get("steps"), "loss_first": c.get("first_loss"),
                                "loss_last": c.get("final_loss")}
    if (u := _read(m / "upscale.json")) is not None:
        out["stages"]["upscale"] = {"layers_before": u.get("original_layers"),
                                    "layers_after": u.get("target_layers")}
    if (s := _read(m / "sft.json")) is not None:
        first, last = _first_last(root / "plots" / "sft_loss.json", "loss")
        out["stages"]["sft"] = {"steps": s.get("steps"), "rows": s.get("rows"),
                                "loss_first": s.get("first_loss", first), "loss_last": s.get("final_loss", last)}
    if (r := _read(m / "rl.json")) is not None:
        out["stages"]["rl"] = {"steps": r.get("steps"), "prompts": r.get("prompts"),
                               "reward_first": r.get("reward_first"), "reward_last": r.get("reward_last")}
    boxed = {}
    for name in models:
        e = _read(m / f"evaluate-{name}.json")
        samples = root / "predictions" / name / "samples.parquet"
        entry: dict = {}
        if e is not None:
            problems = int(e.get("problems", 0))
            correct = round(float(e.get("accuracy", 0.0)) * problems)
            entry["accuracy"] = (correct / problems if problems else 0.0, *wilson(correct, problems))
            entry["problems"] = problems
        if samples.exists():
            boxed[name] = boxed_by_problem(samples)
            entry["boxed"] = cluster_bootstrap(boxed[name])
            entry["samples"] = sum(t for _, t in boxed[name].values())
        out["models"][name] = entry
    if len(boxed) == 2:
        diff = paired_bootstrap(boxed[models[0]], boxed[models[1]])
        out["boxed_change"] = {"diff": diff, "learned": diff[1] > 0, "unlearned": diff[2] < 0}
    return out


def _loss(first, last) -> str:
    return "—" if first is None or last is None else f"{first:.3f} -> {last:.3f}"


def _pct(triple) -> str:
    value, low, high = triple
    return f"{100 * value:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def render_summary(summary: dict) -> str:
    """The summary as plain text: stage lines, then the base/final table and the verdict on learning."""
    st = summary["stages"]
    lines = ["stage     what it did"]

    def top(counts: dict, n: int = 3) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:n])

    g = st.get("generate")
    lines.append("generate  " + (f"{g['samples']} teacher samples -> {g['parsed']} parsed rows"
                                 + (f" (rejected: {top(g['rejects'])})" if g["rejects"] else "") if g else "not run"))
    j = st.get("judge")
    lines.append("judge     " + (f"{j['rows']} rows -> {j['kept']} kept"
                                 + (f" (dropped: {top(j['drops'])})" if j["drops"] else "") if j else "not run"))
    c = st.get("cpt")
    cpt = f"{c['steps']} steps, loss {_loss(c['loss_first'], c['loss_last'])}" if c else "not run"
    lines.append("cpt       " + cpt)
    u = st.get("upscale")
    lines.append("upscale   " + (f"{u['layers_before']} -> {u['layers_after']} layers" if u else "not run"))
    s = st.get("sft")
    sft = f"{s['steps']} steps, loss {_loss(s['loss_first'], s['loss_last'])}" if s else "not run"
    lines.append("sft       " + sft)
    r = st.get("rl")
    lines.append("rl        " + (f"{r['steps']} steps on {r['prompts']} prompts, reward "
                                 f"{_loss(r['reward_first'], r['reward_last'])}" if r else "not run"))
    models = summary["models"]
    if models:
        lines += ["", "eval set (95% intervals)  " + "  ".join(f"{name:<26}" for name in models)]
        acc = [_pct(e["accuracy"]) + f" of {e['problems']}" if "accuracy" in e else "—" for e in models.values()]
        lines.append("voted accuracy            " + "  ".join(f"{a:<26}" for a in acc))
        box = [_pct(e["boxed"]) + f" of {e['samples']}" if "boxed" in e else "—" for e in models.values()]
        lines.append("answers in one \\boxed{}   " + "  ".join(f"{b:<26}" for b in box))
    change = summary.get("boxed_change")
    if change:
        diff, low, high = change["diff"]
        verdict = ("learned: the interval excludes 0" if change["learned"] else
                   "worse beyond noise: the interval excludes 0" if change["unlearned"] else
                   "within noise: the interval includes 0")
        lines.append(f"boxed-answer change final - base: {100 * diff:+.1f} points [{100 * low:+.1f}, {100 * high:+.1f}]"
                     f", {verdict}")
    return "\n".join(lines)


def main_summary(root: Path) -> str:
    """render_summary(summarize(root)), with unreadable inputs turned into one InputError line."""
    try:
        return render_summary(summarize(root))
    except (KeyError, ValueError, TypeError) as err:
        raise InputError(f"{root}: unexpected metrics content ({err})") from None


if __name__ == "__main__":
    import sys

    try:
        print(main_summary(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
    except InputError as err:
        sys.exit(f"report: {err}")
