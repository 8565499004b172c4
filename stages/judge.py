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


def _parse_shard(ctx, param, value):
    if value is None:
        return None
    try:
        index, count = (int(v) for v in value.split("/"))
    except ValueError:
        raise click.BadParameter("expected i/n, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise click.BadParameter(f"{value}: need 0 <= i < n")
    return index, count


@click.command()
@click.option("--params", "params_path", type=click.Path(path_type=Path), default="params.yaml", show_default=True,
              help="params file; reads section `judge` (engine, sampling, filters, dedup, decontam, agreement)")
@click.option("--raw", type=click.Path(path_type=Path), required=True, help="generate's output folder (shard-*.parquet)")
@click.option("--eval", "evals", type=click.Path(path_type=Path), multiple=True, required=True,
              help="evaluation set (JSONL/Parquet with id, problem) to decontaminate against; repeatable")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="folder for kept.parquet, dropped.parquet")
@click.option("--metrics", type=click.Path(path_type=Path), default="metrics/judge.json", show_default=True)
@click.option("--plot", type=click.Path(path_type=Path), default="plots/judge_coverage.json", show_default=True,
              help="kept rows per field x difficulty, a list of {field, difficulty, cell, kept}")
@click.option("--shard", callback=_parse_shard, default=None, help="i/n: judge only every n-th input shard from i")
def main(params_path: Path, raw: Path, evals: tuple[Path, ...], out: Path, metrics: Path, plot: Path, shard) -> None:
    """Filter, deduplicate, decontaminate and LLM-judge the generated rows."""
    from ftllm.cli import one_line_errors, setup_logging
    from ftllm.config import load_stage
    from ftllm.io import write_json
    from ftllm.judge import run_judge

    setup_logging()
    with one_line_errors():
        config = load_stage(params_path, "judge")
        result = run_judge(config, raw=raw, evals=list(evals), out=out, shard=shard)
    write_json(metrics, result.metrics)
    write_json(plot, result.coverage)
    m = result.metrics
    click.echo(f"kept {m['kept']} of {m['input_rows']} rows ({m['dropped']} dropped) -> {out}")


if __name__ == "__main__":
    main()
