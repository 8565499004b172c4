"""predict: sample N solutions per problem with one model, vote, write the competition's `output`.

Reads the `predict` section of params.yaml (engine, sampling with n = samples per problem,
prompt, strategy, parse workers/timeouts). `--model` overrides `predict.engine.model`.
Writes `<out>/predictions.jsonl` (every input field + `output`) and `<out>/samples.parquet`
(every sample: id, sample, text, num_tokens, logprob, answer, class_index, class_size), atomically.

    python stages/predict.py --params params.yaml --model models/rl --input data/eval/problems.jsonl \\
        --out predictions/final --metrics metrics/predict-final.json
"""
from pathlib import Path

import click

from ftllm.cli import params_option, run_stage


@click.command(help=__doc__)
@params_option("predict")
@click.option("--model", default=None, help="checkpoint folder; overrides predict.engine.model")
@click.option("--input", "input_path", type=click.Path(path_type=Path), required=True,
              help="JSONL of problems: id, problem[, category, unit, solution, evaluation_method]")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="output folder")
@click.option("--metrics", type=click.Path(path_type=Path), default=None,
              help="flat JSON: problems, samples, tokens, unparseable samples, seconds")
def main(**_) -> None:
    run_stage("predict", "ftllm.infer.predict:predict_file", metrics="metrics",
              summary="predict: {problems} problems, {samples} samples ({unparseable_samples} unparseable), "
                      "{seconds:.0f}s -> {out_dir}")


if __name__ == "__main__":
    main()
