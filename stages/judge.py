"""Stage `judge`: curate the teacher's rows (params section: `judge`).

Cheap filters first (format, length, language, exact and near duplicates,
decontamination against every eval set), then one batched LLM-as-judge call on
the survivors, then optional answer agreement. Writes `kept.parquet` and
`dropped.parquet` (one `drop_reason` per row) under --out, flat metrics whose
drop counts add up to the input, and kept rows per field x difficulty for a plot.

    python stages/judge.py --params params.yaml --raw data/raw --eval data/eval/problems.jsonl \\
        --out data/judged --metrics metrics/judge.json --plot plots/judge_coverage.json

`--shard i/n` judges only every n-th input shard from i and writes to
--out/shard-<i>-of-<n>/; duplicates are then removed within that shard only.
"""
from pathlib import Path

import click

from ftllm.cli import SHARD, params_option, run_stage


@click.command(help=__doc__)
@params_option("judge")
@click.option("--raw", type=click.Path(path_type=Path), required=True,
              help="generate's output folder (shard-*.parquet)")
@click.option("--eval", "evals", type=click.Path(path_type=Path), multiple=True, required=True,
              help="evaluation set (JSONL/Parquet with id, problem) to decontaminate against; repeatable")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="folder for kept.parquet, dropped.parquet")
@click.option("--metrics", type=click.Path(path_type=Path), default="metrics/judge.json", show_default=True)
@click.option("--plot", type=click.Path(path_type=Path), default="plots/judge_coverage.json", show_default=True,
              help="kept rows per field x difficulty, a list of {field, difficulty, cell, kept}")
@click.option("--shard", type=SHARD, default=None, help="i/n: judge only every n-th input shard from i")
def main(**_) -> None:
    run_stage("judge", "ftllm.judge:judge_stage", metrics="metrics",
              summary="kept {kept} of {input_rows} rows ({dropped} dropped) -> {out}")


if __name__ == "__main__":
    main()
