"""Budgeted adaptive sampling against fixed-N self-consistency on the same problems.

Fixed-N voting runs first and its wall time T sets the budgets: the adaptive sampler gets
`fraction x T` for each `--fractions` value, with `max_n` = N (and 2N at the full budget,
to show where the time saved on easy problems goes). Writes accuracy, seconds and samples
per method to benchmarks/results/budget_vs_fixed.json.

    python benchmarks/budget_vs_fixed.py --model smollm2 --problems 16 --n 8
    python benchmarks/budget_vs_fixed.py --model tiny --problems 8 --n 4 --max-new-tokens 16   # smoke run
"""
from __future__ import annotations

from pathlib import Path

import click

CACHE = Path.home() / ".cache" / "ftllm-bench"  # converted / built models for the benchmark runs


@click.command()
@click.option("--model", default="smollm2", show_default=True, help="tiny | smollm2 | a checkpoint folder")
@click.option("--backend", type=click.Choice(["hf", "vllm"]), default="hf", show_default=True)
@click.option("--problems", default=16, show_default=True, help="problems from the project's generated eval set")
@click.option("--n", "n", default=8, show_default=True, help="samples per problem for fixed-N voting")
@click.option("--round-size", default=2, show_default=True, help="samples per problem per adaptive round")
@click.option("--max-new-tokens", default=96, show_default=True)
@click.option("--temperature", default=0.7, show_default=True)
@click.option("--fractions", default="0.5,1.0", show_default=True, help="adaptive budgets as fractions of fixed-N time")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=CACHE, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("benchmarks/results/budget_vs_fixed.json"))
def main(model, backend, problems, n, round_size, max_new_tokens, temperature, fractions, cache_dir, out) -> None:
    """Compare fixed-N voting with the budgeted adaptive sampler (accuracy, time, samples)."""
    import dataclasses

    import torch
    from strategy_runs import compare, evaluation_rows, prepare_model

    from ftllm.config import build
    from ftllm.engine import make_engine
    from ftllm.infer import PredictConfig
    from ftllm.infer.budget import run_budget
    from ftllm.infer.predict import run_sc
    from ftllm.io import write_json
    from ftllm.provenance import provenance

    path = prepare_model(model, cache_dir)
    rows = evaluation_rows(problems)
    sampling = {"n": n, "temperature": temperature, "top_p": 0.95, "max_new_tokens": max_new_tokens, "seed": 0}
    engine_spec = {"model": path, "backend": backend, "dtype": "float32", "max_model_len": 2048, "batch_size": 64}
    fixed = build(PredictConfig, {"engine": engine_spec, "sampling": sampling, "parse_workers": 2}, "predict")
    fractions = [float(f) for f in fractions.split(",")]
    with make_engine(fixed.engine) as engine:
        table = compare(engine, rows, {f"fixed N={n}": (run_sc, fixed)})
        fixed_s = table[0]["seconds_total"]
        runs, budgets = {}, {}
        for fraction in fractions:
            for max_n in ([n, 2 * n] if fraction >= 1.0 else [n]):
                budget = {"time_budget_s": fraction * fixed_s, "round_size": round_size, "max_n": max_n,
                          "min_n": 2 * round_size, "stop_share": 1.0, "probe_problems": 2,
                          "reserve_s": 0.02 * fraction * fixed_s}
                config = dataclasses.replace(fixed, strategy="budget", budget=build_budget(budget))
                name = f"budget {fraction:g}xT max_n={max_n}"
                runs[name], budgets[name] = (run_budget, config), fraction * fixed_s
        table += compare(engine, rows, runs)
    for entry in table[1:]:
        entry["budget_s"] = round(budgets[entry["strategy"]], 3)
        entry["within_budget"] = entry["seconds_total"] <= budgets[entry["strategy"]]
    setup = {"model": model, "backend": backend, "problems": len(rows), "n": n, "round_size": round_size,
             "max_new_tokens": max_new_tokens, "temperature": temperature, "fixed_seconds": fixed_s,
             "torch_threads": torch.get_num_threads()} | provenance()
    write_json(out, {"setup": setup, "table": table})
    click.echo(f"wrote {out}")


def build_budget(values: dict):
    from ftllm.config import build
    from ftllm.infer.budget import BudgetConfig

    return build(BudgetConfig, values, "budget")


if __name__ == "__main__":
    main()
