"""sft stage: fine-tune the upscaled model on the judged teacher solutions (reads params section `sft`).

    python stages/sft.py --params params.yaml --model models/upscaled --data data/judged/kept.parquet \\
        --out models/sft --checkpoints checkpoints/sft --metrics metrics/sft.json --loss-log plots/sft_loss.json

With `sft.num_processes` > 1 (or `auto` on a multi-GPU box) the command re-runs itself under
`accelerate launch` with `sft.accelerate_config`; a rerun after a kill resumes from --checkpoints.
"""
from pathlib import Path

import click

from ftllm.cli import params_option, run_stage

PATH = click.Path(path_type=Path)


@click.command(help=__doc__)
@params_option("sft")
@click.option("--model", "model_dir", type=PATH, required=True, help="Checkpoint to fine-tune.")
@click.option("--data", type=PATH, required=True, help="Judged rows (parquet/jsonl).")
@click.option("--out", "out_dir", type=PATH, required=True, help="Folder for the fine-tuned model.")
@click.option("--checkpoints", "checkpoint_dir", type=PATH, default="checkpoints/sft", show_default=True,
              help="Resumable trainer checkpoints (persistent between runs).")
@click.option("--metrics", "metrics_path", type=PATH, default="metrics/sft.json", show_default=True)
@click.option("--loss-log", "loss_log_path", type=PATH, default="plots/sft_loss.json", show_default=True)
@click.option("--live", "live_dir", type=PATH, default="dvclive/sft", show_default=True, help="DVCLive folder")
def main(**_) -> None:
    run_stage("sft", "ftllm.train.sft:train_sft", inputs=("model_dir", "data"), relaunch=True,
              metrics="metrics_path", writes_metrics=True, errors=(ValueError,),
              summary="sft: {steps} steps, loss {final_loss}, model in {out_dir}")


if __name__ == "__main__":
    main()
