"""upscale stage: OpT-DeUS depth up-scaling with optimal-transport fusion (reads params section `upscale`).

    python stages/upscale.py --params params.yaml --model models/cpt --out models/upscaled \
        --metrics metrics/upscale.json

Writes the grown checkpoint plus `upscale.json` (layer map, new layers, fusion settings),
which the sft stage reads to train only the new layers when `upscale.freeze_original` is on.
"""
from __future__ import annotations

from pathlib import Path

import click


@click.command(help=__doc__)
@click.option("--params", type=click.Path(path_type=Path), default="params.yaml", show_default=True,
              help="params file; reads its `upscale` section")
@click.option("--model", type=click.Path(path_type=Path), required=True, help="Checkpoint to grow.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the grown model.")
@click.option("--metrics", type=click.Path(path_type=Path), default="metrics/upscale.json", show_default=True)
def main(params: Path, model: Path, out: Path, metrics: Path) -> None:
    import logging

    from ftllm.cli import one_line_errors
    from ftllm.config import load_stage
    from ftllm.io import InputError, write_json

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with one_line_errors():
        config = load_stage(params, "upscale")
        if not model.exists():
            raise InputError(f"{model}: not found")
        from ftllm.upscale import upscale

        result = upscale(config, model, out)
    write_json(metrics, result)
    click.echo(f"upscale: {result['original_layers']} -> {result['target_layers']} layers "
               f"({result['fusion']}, ot_rescale={result['ot_rescale']}) in {result['seconds']} s, model in {out}")


if __name__ == "__main__":
    main()
