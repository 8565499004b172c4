"""Benchmark: the generate stage's sampling throughput against a bare `vllm.LLM.generate` loop.

Both sides run the same prompts (the stage's grid rendered with the model's chat
template) with the same sampling parameters (per-shard seeds, `n` samples per cell) on
the same loaded `vllm.LLM`, so the ratio measures what the stage adds around the engine:
prompt rendering, parsing, Parquet writes. Engine start-up is outside both timings.
Runs alternate (bare, stage, bare, stage …) and the best of each is kept.

    python benchmarks/generate_vs_engine.py --model tiny --units 2 --samples-per-cell 4 --max-new-tokens 64
    python benchmarks/generate_vs_engine.py --model models/base --units 44 --max-new-tokens 1024   # GPU box

Writes benchmarks/results/generate_vs_engine.json: ratio, stage_tokens_per_s,
bare_tokens_per_s, device, date, command (and the sizes used).
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from ftllm.provenance import provenance

RESULT = Path(__file__).resolve().parent / "results" / "generate_vs_engine.json"


def build_config(model: str, args):
    from ftllm.config import build
    from ftllm.generate import GenerateConfig
    from ftllm.generate.grid import CURRICULUM

    units = [(c, u) for c, us in CURRICULUM.items() for u in us][: args.units]
    fields: dict[str, list[str]] = {}
    for category, unit in units:
        fields.setdefault(category, []).append(unit)
    return build(
        GenerateConfig,
        {
            "teacher": {"model": model, "backend": "vllm", "max_model_len": args.max_model_len, "seed": 0},
            "sampling": {"temperature": 1.0, "max_new_tokens": args.max_new_tokens, "skip_special_tokens": False},
            "fields": fields,
            "difficulties": list(range(1, args.difficulties + 1)),
            "tool_use": [False, True],
            "samples_per_cell": args.samples_per_cell,
            "shard_size": args.shard_size,
            "language": args.language,
        },
        "generate",
    )


def bare_requests(engine, config):
    """The exact (prompt ids, SamplingParams) pairs the stage sends, built once, outside the timing."""
    from ftllm.engine.base import render_chat
    from ftllm.generate.grid import group_by_cell, shard_seed
    from ftllm.generate.prompts import load_prompt_set, render_conversation
    from ftllm.generate.run import plan_items

    prompts = load_prompt_set(config.language)
    calls = []
    for k, items in enumerate(plan_items(config)):
        by_size: dict[int, list] = {}
        for group in group_by_cell(items):
            by_size.setdefault(len(group), []).append(group)
        for size, groups in by_size.items():
            ids = [
                render_chat(engine.tokenizer, render_conversation(prompts, g[0].cell, config.language),
                            reasoning_effort=config.reasoning_effort)
                for g in groups
            ]
            sampling = dataclasses.replace(config.sampling, n=size, seed=shard_seed(config.seed, k))
            calls.append(([{"prompt_token_ids": p} for p in ids], engine.sampling_params(sampling)))
    return calls


def run_bare(llm, calls) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = 0
    for requests, params in calls:
        for out in llm.generate(requests, params, use_tqdm=False):
            tokens += sum(len(c.token_ids) for c in out.outputs)
    return tokens, time.perf_counter() - start


def run_stage(engine, config) -> tuple[int, float]:
    from ftllm.generate import generate_shards

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        metrics = generate_shards(config, Path(tmp) / "raw", engine=engine)
        return metrics["tokens_generated"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="checkpoint folder, or 'tiny' to build the random test model")
    parser.add_argument("--units", type=int, default=2, help="first N curriculum units")
    parser.add_argument("--difficulties", type=int, default=2, help="difficulties 1..N")
    parser.add_argument("--samples-per-cell", type=int, default=4)
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--language", default="ja")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each side (best kept)")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()

    from ftllm.engine import make_engine
    from ftllm.io import write_json

    model = args.model
    if model == "tiny":
        from ftllm.tiny import build_tiny_model

        model = str(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny"))
    config = build_config(model, args)
    with make_engine(config.teacher) as engine:
        calls = bare_requests(engine, config)
        run_bare(engine.llm, calls[:1])  # warm-up: first-call compilation and allocation
        bare, stage = [], []
        for _ in range(args.repeats):
            bare.append(run_bare(engine.llm, calls))
            stage.append(run_stage(engine, config))
    bare_tps = max(t / s for t, s in bare)
    stage_tps = max(t / s for t, s in stage)
    result = {
        "ratio": round(stage_tps / bare_tps, 4),
        "stage_tokens_per_s": round(stage_tps, 2),
        "bare_tokens_per_s": round(bare_tps, 2),
        **provenance(),
        "model": args.model,
        "prompts": sum(len(r) for r, _ in calls),
        "samples": sum(len(r) * p.n for r, p in calls),
        "engine_calls": len(calls),
        "tokens_per_run": {"bare": [t for t, _ in bare], "stage": [t for t, _ in stage]},
        "seconds_per_run": {"bare": [round(s, 3) for _, s in bare], "stage": [round(s, 3) for _, s in stage]},
    }
    write_json(args.out, result)
    print(result)


if __name__ == "__main__":
    main()
