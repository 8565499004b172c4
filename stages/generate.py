"""generate: sample the teacher over the condition grid into parsed, sharded rows.

Reads the `generate` section of params.yaml (teacher engine, sampling, grid, prompts,
shard size, seed). Writes `<out>/shard-*.parquet` (parsed rows), `<out>/rejects/`
(unparsable samples with their reason), `<out>/plan.json`, and flat metrics.

    python stages/generate.py --params params.yaml --out data/raw --metrics metrics/generate.json
    CUDA_VISIBLE_DEVICES=1 python stages/generate.py --out data/raw --metrics m1.json --shard 1/4

A rerun skips complete shards, so an interrupted run just starts again.
"""
from pathlib import Path

import click

from ftllm.cli import SHARD, params_option, run_stage


@click.command(help=__doc__)
@params_option("generate")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="output folder of shard-*.parquet")
@click.option("--metrics", type=click.Path(path_type=Path), default="metrics/generate.json", show_default=True,
              help="flat JSON: counts, parse yield, reject reasons, counts per cell")
@click.option("--shard", default="0/1", show_default=True, type=SHARD,
              help="i/n: run only shards k with k % n == i (one process per GPU or host)")
def main(**_) -> None:
    run_stage("generate", "ftllm.generate:generate_shards", metrics="metrics",
              summary="generate: {kept} rows kept, {rejected} rejected (yield {parse_yield:.1%}), "
                      "shards {shards_done}/{shards_owned}")


if __name__ == "__main__":
    main()
