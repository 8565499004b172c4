"""sft stage: fine-tune the upscaled model on the judged teacher solutions (reads params section `sft`).

    python stages/sft.py --params params.yaml --model models/upscaled --data data/judged/kept.parquet \
        --out models/sft --checkpoints checkpoints/sft --metrics metrics/sft.json --loss-log plots/sft_loss.json

With `sft.num_processes` > 1 (or `auto` on a multi-GPU box) the command re-runs itself under
`accelerate launch` with `sft.accelerate_config`; a rerun after a kill resumes from --checkpoints.
"""
from __future__ import annotations

from pathlib import Path

import click


@click.command(help=__doc__)
@click.option("--params", type=click.Path(path_type=Path), default="params.yaml", show_default=True)
@click.option("--model", type=click.Path(path_type=Path), required=True, help="Checkpoint to fine-tune.")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Judged rows (parquet/jsonl).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the fine-tuned model.")
@click.option(
    "--checkpoints", type=click.Path(path_type=Path), default="checkpoints/sft", show_default=True,
    help="Resumable trainer checkpoints (persistent between runs).",
)  # fmt: skip
@click.option("--metrics", type=click.Path(path_type=Path), default="metrics/sft.json", show_default=True)
@click.option("--loss-log", type=click.Path(path_type=Path), default="plots/sft_loss.json", show_default=True)
def main(params: Path, model: Path, data: Path, out: Path, checkpoints: Path, metrics: Path, loss_log: Path) -> None:
    import logging

    from ftllm.config import ConfigError, load_stage
    from ftllm.io import InputError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_stage(params, "sft")
        for path in (model, data):
            if not path.exists():
                raise InputError(f"{path}: not found")
    except (ConfigError, InputError) as err:
        raise click.ClickException(str(err)) from None

    from ftllm.cli import relaunched
    from ftllm.train.launch import is_main_process

    argv = [__file__, "--params", params, "--model", model, "--data", data, "--out", out]
    argv += ["--checkpoints", checkpoints, "--metrics", metrics, "--loss-log", loss_log]
    if relaunched("sft", config, argv, model_dir=model):
        return

    from ftllm.train.sft import train_sft

    try:
        result = train_sft(config, model, data, out, checkpoints, metrics_path=metrics, loss_log_path=loss_log)
    except (InputError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    if is_main_process():
        click.echo(f"sft: {result['steps']} steps, loss {result['final_loss']}, model in {out}")


if __name__ == "__main__":
    main()
