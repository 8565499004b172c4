"""report: print the reference table (model x accuracy, cons@1/cons@40/cons@160) from evaluate metrics.

Reads no params section. A column whose k exceeds a model's samples per problem shows "—".

    python stages/report.py --metrics metrics/evaluate-base.json --metrics metrics/evaluate-final.json
"""
from __future__ import annotations

from pathlib import Path

import click


@click.command(help=__doc__)
@click.option("--metrics", "paths", type=click.Path(path_type=Path), multiple=True, required=True,
              help="an evaluate metrics JSON (repeat); the row is named after the file (evaluate-<name>.json)")
@click.option("--ks", default="1,40,160", show_default=True, help="comma-separated cons@k columns")
def main(paths: tuple[Path, ...], ks: str) -> None:
    from ftllm.io import InputError
    from ftllm.metrics import render_table

    try:
        columns = [int(k) for k in ks.split(",") if k.strip()]
    except ValueError:
        raise click.BadParameter(f"expected integers, got {ks!r}", param_hint="--ks") from None
    try:
        click.echo(render_table(paths, columns))
    except InputError as err:
        raise click.ClickException(str(err)) from None


if __name__ == "__main__":
    main()
