"""Stage `evalset`: write the evaluation problems (params section: `evalset`).

Japanese problems from templates whose exact answers sympy computes, in the
competition's JSONL format (`id, category, unit, problem, solution, evaluation_method`).

    python stages/evalset.py --out data/eval/problems.jsonl
"""
from pathlib import Path

import click

from ftllm.cli import params_option, run_stage


@click.command(help=__doc__)
@params_option("evalset")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="JSONL file to write")
def main(**_) -> None:
    run_stage("evalset", "ftllm.evalset:write_evalset", summary="wrote {problems} problems to {out}")


if __name__ == "__main__":
    main()
