"""generate: sample the teacher over the condition grid into parsed, sharded rows.

Reads the `generate` section of params.yaml (teacher engine, sampling, grid, prompts,
shard size, seed). Writes `<out>/shard-*.parquet` (parsed rows), `<out>/rejects/`
(unparsable samples with their reason), `<out>/plan.json`, and flat metrics.


    python stages/generate.py --params params.yaml --out data/raw --metrics metrics/generate.json
    CUDA_VISIBLE_DEVICES=1 python stages/generate.py --out data/raw --metrics m1.json --shard 1/4

A rerun skips complete shards, so an interrupted run just starts again.
"""
from __future__ import annotations

import logging
from pathlib import Path

import click


@click.command(help=__doc__)
@click.option("--params", type=click.Path(path_type=Path), default="params.yaml", show_default=True,
              help="params file; this stage reads its `generate` section")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="output folder of shard-*.parquet")
@click.option("--metrics", type=click.Path(path_type=Path), default="metrics/generate.json", show_default=True,
              help="flat JSON: counts, parse yield, reject reasons, counts per cell")
@click.option("--shard", default="0/1", show_default=True,
              help="i/n: run only shards k with k % n == i (one process per GPU or host)")
def main(params: Path, out: Path, metrics: Path, shard: str) -> None:
    from ftllm.config import ConfigError, load_stage
    from ftllm.generate import generate_shards
    from ftllm.generate.grid import parse_shard_option
    from ftllm.io import InputError, write_json

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        worker = parse_shard_option(shard)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--shard") from None
    try:
        config = load_stage(params, "generate")
        result = generate_shards(config, out, shard=worker)
    except (ConfigError, InputError) as err:
        raise click.ClickException(str(err)) from None
    write_json(metrics, result)
    click.echo(
        f"generate: {result['kept']} rows kept, {result['rejected']} rejected "
        f"(yield {result['parse_yield']:.1%}), shards {result['shards_done']}/{result['shards_owned']}"
    )


if __name__ == "__main__":
    main()
