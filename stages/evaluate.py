"""evaluate: grade a predictions folder against the gold rows; accuracy, pass@k, cons@k.

Reads the `evaluate` section of params.yaml (ks, cons@k subsets, seed, optional external
grader command, grading workers/timeout). Writes flat DVC metrics JSON (`accuracy`,
`accuracy/<category>`, `pass@k`, `cons@k` for k <= n) and a DVC plot file (k vs cons, pass).

    python stages/evaluate.py --params params.yaml --predictions predictions/final \\
        --gold data/eval/problems.jsonl --metrics metrics/evaluate-final.json --plot plots/evaluate-final.json
"""
from __future__ import annotations

from pathlib import Path

import click


@click.command(help=__doc__)
@click.option("--params", type=click.Path(path_type=Path), default="params.yaml", show_default=True,
              help="params file; this stage reads its `evaluate` section")
@click.option("--predictions", type=click.Path(path_type=Path), required=True,
              help="folder holding predictions.jsonl (and samples.parquet for pass@k/cons@k)")
@click.option("--gold", type=click.Path(path_type=Path), required=True, help="JSONL of gold rows: id, solution, ...")
@click.option("--metrics", type=click.Path(path_type=Path), required=True, help="flat metrics JSON to write")
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="plot data JSON: [{k, cons, pass}]")
def main(params: Path, predictions: Path, gold: Path, metrics: Path, plot: Path | None) -> None:
    from ftllm.config import ConfigError, load_stage
    from ftllm.io import InputError, write_json
    from ftllm.metrics import evaluate

    try:
        config = load_stage(params, "evaluate")
        result, points = evaluate(config, predictions, gold)
    except (ConfigError, InputError) as err:
        raise click.ClickException(str(err)) from None
    write_json(metrics, result)
    if plot:
        write_json(plot, points)
    extra = ", ".join(f"{k} {result[k]:.3f}" for k in result if k.startswith("cons@"))
    click.echo(f"evaluate: accuracy {result['accuracy']:.3f} on {result['problems']} problems" + (f"; {extra}" if extra else ""))


if __name__ == "__main__":
    main()
