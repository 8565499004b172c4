"""cpt stage: DoRA continued pretraining with context extension (reads params section `cpt`).

    python stages/cpt.py --params params.yaml --model models/base --out models/cpt \\
        --checkpoints checkpoints/cpt --metrics metrics/cpt.json --plot plots/cpt_loss.json

The corpus is `cpt.dataset` (a hub dataset) or the local files in `cpt.corpus`; `--corpus`
(repeatable) overrides both with local .txt/.md/.jsonl files or folders. With
`cpt.num_processes` > 1 (or `auto` on a multi-GPU box) the command re-runs itself under
`accelerate launch`; a rerun after a kill resumes from --checkpoints.
"""
from pathlib import Path

import click

from ftllm.cli import params_option, run_stage

PATH = click.Path(path_type=Path)


@click.command(help=__doc__)
@params_option("cpt")
@click.option("--model", "model_dir", type=PATH, required=True, help="Checkpoint to continue pretraining.")
@click.option("--out", "out_dir", type=PATH, required=True, help="Folder for the merged model.")
@click.option("--corpus", type=PATH, multiple=True,
              help="Local corpus file or folder (repeatable); overrides cpt.dataset and cpt.corpus.")
@click.option("--checkpoints", "checkpoint_dir", type=PATH, default="checkpoints/cpt", show_default=True,
              help="Resumable trainer checkpoints (persistent between runs).")
@click.option("--metrics", "metrics_path", type=PATH, default="metrics/cpt.json", show_default=True)
@click.option("--plot", "loss_log_path", type=PATH, default="plots/cpt_loss.json", show_default=True,
              help="Per-step training loss for `dvc plots`.")
@click.option("--live", "live_dir", type=PATH, default="dvclive/cpt", show_default=True, help="DVCLive folder")
def main(**_) -> None:
    run_stage("cpt", "ftllm.train.cpt:train_cpt", inputs=("model_dir",), relaunch=True, metrics="metrics_path",
              writes_metrics=True, summary="cpt: {steps} steps, {tokens_seen} tokens, loss {first_loss} -> "
              "{final_loss}, context {max_position_embeddings}, model in {out_dir}")


if __name__ == "__main__":
    main()
