"""evaluate: grade a predictions folder against the gold rows; accuracy, pass@k, cons@k.

Reads the `evaluate` section of params.yaml (ks, cons@k subsets, seed, optional external
grader command, grading workers/timeout). Writes flat DVC metrics JSON (`accuracy`,
`accuracy/<category>`, `pass@k`, `cons@k` for k <= n) and a DVC plot file (k vs cons, pass).

    python stages/evaluate.py --params params.yaml --predictions predictions/final \\
        --gold data/eval/problems.jsonl --metrics metrics/evaluate-final.json --plot plots/evaluate-final.json
"""
from pathlib import Path

import click

from ftllm.cli import params_option, run_stage


@click.command(help=__doc__)
@params_option("evaluate")
@click.option("--predictions", "predictions_dir", type=click.Path(path_type=Path), required=True,
              help="folder holding predictions.jsonl (and samples.parquet for pass@k/cons@k)")
@click.option("--gold", "gold_path", type=click.Path(path_type=Path), required=True,
              help="JSONL of gold rows: id, solution, ...")
@click.option("--metrics", type=click.Path(path_type=Path), required=True, help="flat metrics JSON to write")
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="plot data JSON: [{k, cons, pass}]")
def main(**_) -> None:
    run_stage("evaluate", "ftllm.evaluate:evaluate_stage", metrics="metrics",
              summary="evaluate: accuracy {accuracy:.3f} on {problems} problems")


if __name__ == "__main__":
    main()
