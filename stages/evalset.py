"""Stage `evalset`: write the evaluation problems (params section: `evalset`).

Japanese problems from templates whose exact answers sympy computes, in the
competition's JSONL format (`id, category, unit, problem, solution, evaluation_method`).

    python stages/evalset.py --out data/eval/problems.jsonl
"""
from pathlib import Path

import click


@click.command()
@click.option("--params", "params_path", type=click.Path(path_type=Path), default="params.yaml", show_default=True,
              help="params file; reads section `evalset` (seed, per_template, templates)")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="JSONL file to write")
def main(params_path: Path, out: Path) -> None:
    """Build the evaluation set deterministically from its seed."""
    from ftllm.cli import one_line_errors
    from ftllm.config import load_stage
    from ftllm.evalset import build_evalset
    from ftllm.io import write_jsonl

    with one_line_errors():
        rows = build_evalset(load_stage(params_path, "evalset"))
        write_jsonl(out, rows)
    click.echo(f"wrote {len(rows)} problems to {out}")


if __name__ == "__main__":
    main()
