"""upscale stage: OpT-DeUS depth up-scaling with optimal-transport fusion (reads params section `upscale`).

    python stages/upscale.py --params params.yaml --model models/cpt --out models/upscaled \\
        --metrics metrics/upscale.json

Writes the grown checkpoint plus `upscale.json` (layer map, new layers, fusion settings),
which the sft stage reads to train only the new layers when `upscale.freeze_original` is on.
"""
from pathlib import Path

import click

from ftllm.cli import params_option, run_stage


@click.command(help=__doc__)
@params_option("upscale")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True, help="Checkpoint to grow.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Folder for the grown model.")
@click.option("--metrics", type=click.Path(path_type=Path), default="metrics/upscale.json", show_default=True)
def main(**_) -> None:
    run_stage("upscale", "ftllm.upscale:upscale", inputs=("model_dir",), metrics="metrics",
              summary="upscale: {original_layers} -> {target_layers} layers ({fusion}, ot_rescale={ot_rescale}) "
                      "in {seconds} s, model in {out_dir}")


if __name__ == "__main__":
    main()
