"""rl stage: GRPO/DAPO on the judged problems with a verifiable math reward (reads params section `rl`).

    python stages/rl.py --params params.yaml --model models/sft --data data/judged/kept.parquet \\
        --out models/rl --checkpoints checkpoints/rl --metrics metrics/rl.json --plots-dir plots/rl

Writes the trained policy to --out, flat metrics to --metrics, and per-step telemetry
(`steps.json`, `groups.json`) to --plots-dir. With `rl.num_processes` > 1 (or `auto` on a
multi-GPU box) the command re-runs itself under `accelerate launch` with `rl.accelerate_config`;
a rerun after a kill resumes from --checkpoints.
"""
from pathlib import Path

import click

from ftllm.cli import params_option, run_stage

PATH = click.Path(path_type=Path)


@click.command(help=__doc__)
@params_option("rl")
@click.option("--model", "model_dir", type=PATH, required=True, help="Checkpoint to start from (SFT).")
@click.option("--data", type=PATH, required=True, help="Judged rows with answers.")
@click.option("--out", "out_dir", type=PATH, required=True, help="Folder for the trained policy.")
@click.option("--checkpoints", "checkpoint_dir", type=PATH, default="checkpoints/rl", show_default=True,
              help="Resumable trainer checkpoints (persistent between runs).")
@click.option("--metrics", "metrics_path", type=PATH, default="metrics/rl.json", show_default=True)
@click.option("--plots-dir", type=PATH, default="plots/rl", show_default=True)
@click.option("--live", "live_dir", type=PATH, default="dvclive/rl", show_default=True, help="DVCLive folder")
def main(**_) -> None:
    run_stage("rl", "ftllm.train.rl:train_rl", inputs=("model_dir", "data"), relaunch=True,
              metrics="metrics_path", writes_metrics=True, errors=(ValueError,),
              summary="rl: {steps} steps on {prompts} prompts, reward {reward_last}, model in {out_dir}")


if __name__ == "__main__":
    main()
