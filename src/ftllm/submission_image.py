"""Render the Apptainer definition of the competition submission for one chosen checkpoint.

    python -m ftllm.submission_image render --model models/rl --base-archive build/ftllm-image.tar \
        --out build/ftllm.def
    apptainer build build/ftllm.sif build/ftllm.def      # `make submission-image` runs both

The template (`submission/ftllm.def.in`) holds `@NAME@` fields; every one must be filled and no
unknown one may remain, so a renamed field fails here instead of inside a 20-minute image build.
The checkpoint is baked under `/app/models/<name>`, the entry point under `/app/submission/main.py`
and the params file whose `predict` section sets generation under `/app/params.yaml`.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import click

from ftllm.io import InputError, atomic_path

FIELD = re.compile(r"@([A-Z_]+)@")
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
DEFAULT_TEMPLATE = Path("submission/ftllm.def.in")
DEFAULT_ENTRY_POINT = Path("submission/main.py")
DEFAULT_PARAMS = Path("params.yaml")


def check_checkpoint(model_dir: Path) -> None:
    """Refuse a folder that is not a loadable checkpoint: baking the wrong path costs a whole image build."""
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: checkpoint folder not found")
    if not (model_dir / "config.json").is_file():
        raise InputError(f"{model_dir}: no config.json, not a checkpoint folder")
    if not any(p.suffix in WEIGHT_SUFFIXES for p in model_dir.iterdir()):
        raise InputError(f"{model_dir}: no weight files ({', '.join(WEIGHT_SUFFIXES)})")


def container_path(path: Path) -> str:
    """Absolute host path for a `%files` line, which Apptainer splits on whitespace."""
    text = str(path.resolve())
    if any(ch.isspace() for ch in text):
        raise InputError(f"{text}: %files paths cannot contain whitespace; move or link the folder")
    return text


def fill_fields(template: str, values: dict[str, str]) -> str:
    """Replace every `@NAME@`; an unknown or unfilled field is an error that names it."""
    unknown = sorted(set(FIELD.findall(template)) - set(values))
    if unknown:
        raise InputError(f"template field(s) without a value: {', '.join(unknown)}")
    unused = sorted(set(values) - set(FIELD.findall(template)))
    if unused:
        raise InputError(f"value(s) the template never uses: {', '.join(unused)}")
    return FIELD.sub(lambda m: values[m.group(1)], template)


def git_revision(repo: Path = Path(".")) -> str:
    """The commit the image is built from (a label, so a submitted image can be traced back)."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def check_params(params: Path) -> None:
    """The baked params must load as a `predict` section now, not first inside the evaluation box."""
    from ftllm.config import ConfigError, load_stage

    if not Path(params).is_file():
        raise InputError(f"{params}: params file not found")
    try:
        load_stage(params, "predict")
    except (ConfigError, ValueError, TypeError) as err:
        raise InputError(f"{params}: predict section does not load: {err}") from None


def render_definition(template: str, model_dir: Path, base_archive: Path, entry_point: Path, params: Path,
                      name: str | None = None, extra_models: tuple[Path, ...] = (),
                      revision: str = "unknown") -> str:
    """The definition text: `model_dir` (plus e.g. retriever weights in `extra_models`) under /app/models."""
    model_dir = Path(model_dir)
    check_checkpoint(model_dir)
    name = name or model_dir.resolve().name
    if not SAFE_NAME.match(name):
        raise InputError(f"model name {name!r}: use letters, digits, '.', '_' and '-' only")
    if not Path(entry_point).is_file():
        raise InputError(f"{entry_point}: entry point not found")
    files = [(container_path(model_dir), f"/app/models/{name}")]
    for extra in extra_models:
        if not Path(extra).is_dir():
            raise InputError(f"{extra}: extra model folder not found")
        files.append((container_path(Path(extra)), f"/app/models/{Path(extra).resolve().name}"))
    targets = [dst for _, dst in files]
    if len(set(targets)) != len(targets):
        raise InputError(f"two folders would land on the same path under /app/models: {targets}")
    check_params(params)
    files.append((container_path(Path(entry_point)), "/app/submission/main.py"))
    files.append((container_path(Path(params)), "/app/params.yaml"))
    values = {
        "BASE_ARCHIVE": container_path(Path(base_archive)),
        "MODEL_NAME": name,
        "REVISION": revision,
        "FILES": "\n".join(f"    {src} {dst}" for src, dst in files),
    }
    return fill_fields(template, values)


@click.group()
def cli() -> None:
    """Tools for the Apptainer submission image."""


@cli.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="checkpoint folder to bake in, e.g. models/rl")
@click.option("--name", default=None, help="folder name under /app/models (default: the checkpoint folder's name)")
@click.option("--extra-model", "extra_models", multiple=True, type=click.Path(path_type=Path),
              help="another folder to bake under /app/models (e.g. retriever weights); repeatable")
@click.option("--base-archive", type=click.Path(path_type=Path), default=Path("build/ftllm-image.tar"),
              show_default=True, help="`docker save` archive of the GPU image (the definition's base)")
@click.option("--template", type=click.Path(path_type=Path), default=DEFAULT_TEMPLATE, show_default=True)
@click.option("--entry-point", type=click.Path(path_type=Path), default=DEFAULT_ENTRY_POINT, show_default=True)
@click.option("--params", type=click.Path(path_type=Path), default=DEFAULT_PARAMS, show_default=True,
              help="params file baked as /app/params.yaml; its `predict` section sets generation")
@click.option("--out", type=click.Path(path_type=Path), default=Path("build/ftllm.def"), show_default=True)
def render(model_dir: Path, name: str | None, extra_models: tuple[Path, ...], base_archive: Path,
           template: Path, entry_point: Path, params: Path, out: Path) -> None:
    """Write the definition for MODEL, baking PARAMS (checked by loading its `predict` section)."""
    try:
        text = render_definition(template.read_text(), model_dir, base_archive, entry_point, params, name,
                                 extra_models, git_revision())
    except (InputError, OSError) as err:
        raise click.ClickException(str(err)) from None
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    cli()
