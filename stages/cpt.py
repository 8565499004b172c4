"""cpt stage: DoRA continued pretraining with context extension (reads params section `cpt`).

    python stages/cpt.py --params params.yaml --model models/base --out models/cpt \
        --checkpoints checkpoints/cpt --metrics metrics/cpt.json --plot plots/cpt_loss.json

The corpus is `cpt.dataset` (a hub dataset) or the local files in `cpt.corpus`; `--corpus`
(repeatable) overrides both with local .txt/.md/.jsonl files or folders. With
`cpt.num_processes` > 1 (or `auto` on a multi-GPU box) the command re-runs itself under
`accelerate launch`; a rerun after a kill resumes from --checkpoints.
"""
from __future__ import annotations

from pathlib import Path

import click


@click.command(help=__doc__)
@click.option("--params", type=click.Path(path_type=Path), default="params.yaml", show_default=True,
              help="params file; reads its `cpt` section")
@click.option("--model", type=click.Path(path_type=Path), required=True, help="Checkpoint to continue pretraining.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the merged model.")
@click.option("--corpus", type=click.Path(path_type=Path), multiple=True,
              help="Local corpus file or folder (repeatable); overrides cpt.dataset and cpt.corpus.")
@click.option("--checkpoints", type=click.Path(path_type=Path), default="checkpoints/cpt", show_default=True,
              help="Resumable trainer checkpoints (persistent between runs).")
@click.option("--metrics", type=click.Path(path_type=Path), default="metrics/cpt.json", show_default=True)
@click.option("--plot", type=click.Path(path_type=Path), default="plots/cpt_loss.json", show_default=True,
              help="Per-step training loss for `dvc plots`.")
def main(params: Path, model: Path, out: Path, corpus: tuple[Path, ...], checkpoints: Path, metrics: Path,
         plot: Path) -> None:
    import logging

    from ftllm.cli import one_line_errors
    from ftllm.config import load_stage
    from ftllm.io import InputError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with one_line_errors():
        config = load_stage(params, "cpt")
        if not model.exists():
            raise InputError(f"{model}: not found")

    from ftllm.cli import relaunched

    argv = [__file__, "--params", params, "--model", model, "--out", out, "--checkpoints", checkpoints,
            "--metrics", metrics, "--plot", plot] + [a for path in corpus for a in ("--corpus", path)]
    if relaunched("cpt", config, argv, model_dir=model):
        return

    from ftllm.train.cpt import train_cpt

    with one_line_errors():
        result = train_cpt(config, model, out, checkpoints, metrics, plot, corpus=list(corpus) or None)
    click.echo(f"cpt: {result['steps']} steps, {result['tokens_seen']} tokens, loss {result['first_loss']} -> "
               f"{result['final_loss']}, context {result['max_position_embeddings']}, model in {out}")


if __name__ == "__main__":
    main()
