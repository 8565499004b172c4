"""predict: sample N solutions per problem with one model, vote, write the competition's `output`.

Reads the `predict` section of params.yaml (engine, sampling with n = samples per problem,
prompt, strategy, parse workers/timeouts). `--model` overrides `predict.engine.model`.
Writes `<out>/predictions.jsonl` (every input field + `output`) and `<out>/samples.parquet`
(every sample: id, sample, text, num_tokens, logprob, answer, class_index, class_size), atomically.

    python stages/predict.py --params params.yaml --model models/rl --input data/eval/problems.jsonl \\
        --out predictions/final --metrics metrics/predict-final.json
"""
from __future__ import annotations

import logging
from pathlib import Path

import click


@click.command(help=__doc__)
@click.option("--params", type=click.Path(path_type=Path), default="params.yaml", show_default=True,
              help="params file; this stage reads its `predict` section")
@click.option("--model", default=None, help="checkpoint folder; overrides predict.engine.model")
@click.option("--input", "input_path", type=click.Path(path_type=Path), required=True,
              help="JSONL of problems: id, problem[, category, unit, solution, evaluation_method]")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="output folder")
@click.option("--metrics", type=click.Path(path_type=Path), default=None,
              help="flat JSON: problems, samples, tokens, unparseable samples, seconds")
def main(params: Path, model: str | None, input_path: Path, out: Path, metrics: Path | None) -> None:
    from ftllm.config import ConfigError, load_stage
    from ftllm.infer.predict import PROBLEM_TYPES, predict, with_model
    from ftllm.io import InputError, read_jsonl, write_json

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = with_model(load_stage(params, "predict"), model)
        rows = read_jsonl(input_path, required=("id", "problem"), types=PROBLEM_TYPES, unique="id")
        result = predict(config, rows, out)
    except (ConfigError, InputError) as err:
        raise click.ClickException(str(err)) from None
    if metrics:
        write_json(metrics, result)
    click.echo(
        f"predict: {result['problems']} problems, {result['samples']} samples "
        f"({result['unparseable_samples']} unparseable), {result['seconds']:.0f}s -> {out}"
    )


if __name__ == "__main__":
    main()
