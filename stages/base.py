"""Stage `base`: write a model as a plain checkpoint folder (params section: `base`, or `teacher`).

The same command prepares the student's base model and the teacher/judge model, so
both are DVC outputs that teammates can `dvc pull` instead of downloading again:

    python stages/base.py --section base --out models/base
    python stages/base.py --section teacher --out models/teacher
"""
from pathlib import Path

import click


@click.command()
@click.option("--params", "params_path", type=click.Path(path_type=Path), default="params.yaml", show_default=True,
              help="params file; reads the section named by --section (fields: source, model, dtype, revision, ...)")
@click.option("--section", type=click.Choice(["base", "teacher"]), default="base", show_default=True,
              help="which params section describes the model to prepare")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="checkpoint folder to write")
def main(params_path: Path, section: str, out: Path) -> None:
    """Convert a GGUF file or copy a hub/local model into a plain checkpoint folder."""
    from ftllm.cli import one_line_errors, setup_logging
    from ftllm.config import load_section
    from ftllm.models import BaseConfig, prepare_base

    setup_logging()
    with one_line_errors():
        config = load_section(params_path, section, BaseConfig)
        prepare_base(config, out)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
