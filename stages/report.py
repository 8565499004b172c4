"""report: print the reference table (model x accuracy, cons@1/cons@40/cons@160) from evaluate metrics.

Reads no params section. A column whose k exceeds a model's samples per problem shows "—".

    python stages/report.py --metrics metrics/evaluate-base.json --metrics metrics/evaluate-final.json
"""
from pathlib import Path

import click

from ftllm.cli import run_stage


def _ints(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(k) for k in value.split(",") if k.strip())
    except ValueError:
        raise click.BadParameter(f"expected integers, got {value!r}") from None


@click.command(help=__doc__)
@click.option("--metrics", "metrics_paths", type=click.Path(path_type=Path), multiple=True, required=True,
              help="an evaluate metrics JSON (repeat); the row is named after the file (evaluate-<name>.json)")
@click.option("--ks", default="1,40,160", show_default=True, callback=_ints, help="comma-separated cons@k columns")
def main(**_) -> None:
    run_stage(None, "ftllm.evaluate:render_table")


if __name__ == "__main__":
    main()
