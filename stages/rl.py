"""rl stage: GRPO/DAPO on the judged problems with a verifiable math reward (reads params section `rl`).

    python stages/rl.py --params params.yaml --model models/sft --data data/judged/kept.parquet \
        --out models/rl --checkpoints checkpoints/rl --metrics metrics/rl.json --plots-dir plots/rl

Writes the trained policy to --out, flat metrics to --metrics, and per-step telemetry
(`steps.json`, `groups.json`) to --plots-dir. With `rl.num_processes` > 1 (or `auto` on a
multi-GPU box) the command re-runs itself under `accelerate launch` with `rl.accelerate_config`;
a rerun after a kill resumes from --checkpoints.
"""
from __future__ import annotations

from pathlib import Path

import click


@click.command(help=__doc__)
@click.option("--params", type=click.Path(path_type=Path), default="params.yaml", show_default=True)
@click.option("--model", type=click.Path(path_type=Path), required=True, help="Checkpoint to start from (SFT).")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Judged rows with answers.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the trained policy.")
@click.option(
    "--checkpoints", type=click.Path(path_type=Path), default="checkpoints/rl", show_default=True,
    help="Resumable trainer checkpoints (persistent between runs).",
)  # fmt: skip
@click.option("--metrics", type=click.Path(path_type=Path), default="metrics/rl.json", show_default=True)
@click.option("--plots-dir", type=click.Path(path_type=Path), default="plots/rl", show_default=True)
def main(params: Path, model: Path, data: Path, out: Path, checkpoints: Path, metrics: Path, plots_dir: Path) -> None:
    import logging

    from ftllm.config import ConfigError, load_stage
    from ftllm.io import InputError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_stage(params, "rl")
        for path in (model, data):
            if not path.exists():
                raise InputError(f"{path}: not found")
    except (ConfigError, InputError) as err:
        raise click.ClickException(str(err)) from None

    from ftllm.cli import relaunched

    argv = [__file__, "--params", params, "--model", model, "--data", data, "--out", out]
    argv += ["--checkpoints", checkpoints, "--metrics", metrics, "--plots-dir", plots_dir]
    if relaunched("rl", config, argv):
        return

    from ftllm.train.rl import train_rl

    try:
        result = train_rl(config, model, data, out, checkpoints, metrics_path=metrics, plots_dir=plots_dir)
    except (InputError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"rl: {result['steps']} steps on {result['prompts']} prompts, reward {result['reward_last']}, model in {out}")


if __name__ == "__main__":
    main()
