"""Stage `base`: write a model as a plain checkpoint folder (params section: `base`, `baseline` or `teacher`).

The same command prepares the student's base model, the baseline that predict@base answers with
(the family's instruct release) and the teacher/judge model, so all are DVC outputs that teammates
can `dvc pull` instead of downloading again:

    python stages/base.py --section base --out models/base
    python stages/base.py --section baseline --out models/baseline
    python stages/base.py --section teacher --out models/teacher
"""
from pathlib import Path

import click

from ftllm.cli import run_stage


@click.command(help=__doc__)
@click.option("--params", type=click.Path(path_type=Path), default="params.yaml", show_default=True,
              help="params file; reads the section named by --section (fields: source, model, dtype, revision, ...)")
@click.option("--section", type=click.Choice(["base", "baseline", "teacher"]), default="base", show_default=True,
              help="which params section describes the model to prepare")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="checkpoint folder to write")
def main(section: str, **_) -> None:
    run_stage(section, "ftllm.models:prepare_base", summary="wrote {out_dir}")


if __name__ == "__main__":
    main()
