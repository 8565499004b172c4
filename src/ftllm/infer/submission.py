"""The competition entry point: `main.py --input_path in.jsonl --output_path out.jsonl`.

Runs inside the offline Singularity image (no network): hub access is switched off before
anything loads. The model is `--model_dir`, else the first model folder (one holding a
config.json) under /app/models or ./models. Generation settings come from the `predict`
section of `--params` (default: params.yaml next to the model, then ./params.yaml); the
output file has every input field plus `output`, in input order. Samples go to
`<output_path>.samples/` for inspection.

    python submission/main.py --input_path data/eval/problems.jsonl --output_path out.jsonl
"""
from __future__ import annotations

import os
from pathlib import Path

import click

MODEL_ROOTS = (Path("/app/models"), Path("models"))


def find_model_dir(roots=MODEL_ROOTS) -> Path:
    """The first folder (sorted) holding a config.json: the root itself or one level below."""
    for root in roots:
        if not root.is_dir():
            continue
        if (root / "config.json").exists():
            return root
        for child in sorted(p for p in root.iterdir() if p.is_dir()):
            if (child / "config.json").exists():
                return child
    raise FileNotFoundError(f"no model folder (with config.json) under {', '.join(str(r) for r in roots)}")


def find_params(model_dir: Path) -> Path:
    for candidate in (model_dir / "params.yaml", Path("params.yaml"), Path("/app/params.yaml")):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no params.yaml next to {model_dir}, in the working folder or /app")


def run(input_path: Path, output_path: Path, model_dir: Path | None = None, params: Path | None = None) -> dict:
    """Predict `input_path` into `output_path` with the predict stage's code path."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[name] = "1"  # the evaluation box has no network: fail fast instead of retrying
    from ftllm.config import load_stage
    from ftllm.infer.predict import PROBLEM_TYPES, predict, with_model
    from ftllm.io import read_jsonl

    model_dir = Path(model_dir) if model_dir else find_model_dir()
    config = with_model(load_stage(params or find_params(model_dir), "predict"), str(model_dir))
    rows = read_jsonl(input_path, required=("id", "problem"), types=PROBLEM_TYPES, unique="id")
    samples_dir = output_path.with_name(output_path.name + ".samples")
    result = predict(config, rows, samples_dir)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    # the competition output is the predictions file itself; write it atomically beside the samples
    from ftllm.io import write_jsonl

    write_jsonl(output_path, read_jsonl(samples_dir / "predictions.jsonl"))
    return result


@click.command(help=__doc__)
@click.option("--input_path", type=click.Path(path_type=Path), required=True, help="JSONL: id, category, unit, problem")
@click.option("--output_path", type=click.Path(path_type=Path), required=True,
              help="JSONL to write (input rows + output)")
@click.option("--model_dir", type=click.Path(path_type=Path), default=None,
              help="model folder; default: the first one under /app/models or ./models")
@click.option("--params", type=click.Path(path_type=Path), default=None,
              help="params file (predict section); default: params.yaml beside the model, then ./params.yaml")
def main(input_path: Path, output_path: Path, model_dir: Path | None, params: Path | None) -> None:
    from ftllm.config import ConfigError
    from ftllm.io import InputError

    try:
        result = run(input_path, output_path, model_dir, params)
    except (ConfigError, InputError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {result['problems']} predictions to {output_path}")


if __name__ == "__main__":
    main()
