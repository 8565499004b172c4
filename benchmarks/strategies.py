"""Every inference strategy on the same problems with one engine: accuracy, tokens, seconds.

Strategies: plain self-consistency (sc), recursive self-aggregation (rsa), s1 budget forcing
(s1), tool-integrated reasoning with the sandbox (tir), retrieval of similar solved
problems (retrieval) and the budgeted adaptive sampler (budget, given sc's wall time).
Writes one table to benchmarks/results/strategies.json.

Retrieval needs a solved set and an E5 encoder. Offline on CPU there is no E5 checkpoint,
so by default the index is a second draw of the generated eval set (different seed, the
exact answer as the "solution") and the generating model itself is the stand-in encoder:
that measures the mechanics and cost, not the retrieval quality. Pass --encoder and
--index to use the real ones.

    python benchmarks/strategies.py --model smollm2 --problems 8 --n 4
    python benchmarks/strategies.py --model tiny --problems 4 --n 2 --max-new-tokens 16   # smoke run
"""
from __future__ import annotations

from pathlib import Path

import click

CACHE = Path.home() / ".cache" / "ftllm-bench"  # converted / built models for the benchmark runs


@click.command()
@click.option("--model", default="smollm2", show_default=True, help="tiny | smollm2 | a checkpoint folder")
@click.option("--backend", type=click.Choice(["hf", "vllm"]), default="hf", show_default=True)
@click.option("--problems", default=8, show_default=True)
@click.option("--n", "n", default=4, show_default=True, help="samples (traces, population) per problem")
@click.option("--max-new-tokens", default=96, show_default=True)
@click.option("--strategies", default="sc,rsa,s1,tir,retrieval,budget", show_default=True)
@click.option("--encoder", default=None, help="E5 encoder folder for retrieval (default: the model itself)")
@click.option("--index", type=click.Path(path_type=Path), default=None, help="solved problems for retrieval")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=CACHE, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("benchmarks/results/strategies.json"))
def main(model, backend, problems, n, max_new_tokens, strategies, encoder, index, cache_dir, out) -> None:
    """Run the chosen strategies on the same problems and write one comparison table."""
    from types import SimpleNamespace

    import torch
    from strategy_runs import compare, evaluation_rows, prepare_model

    from ftllm.config import build
    from ftllm.engine import make_engine
    from ftllm.infer import PredictConfig
    from ftllm.infer.predict import get_strategy
    from ftllm.io import write_json, write_jsonl
    from ftllm.provenance import provenance

    path = prepare_model(model, cache_dir)
    rows = evaluation_rows(problems)
    if index is None:
        index = cache_dir / "retrieval-index.jsonl"
        solved = evaluation_rows(64, seed=7)
        write_jsonl(index, [{**r, "solution": f"答えは $\\boxed{{{r['solution']}}}$ です。"} for r in solved])
    sampling = {"n": n, "temperature": 0.7, "top_p": 0.95, "max_new_tokens": max_new_tokens, "seed": 0}
    engine_spec = {"model": path, "backend": backend, "dtype": "float32", "max_model_len": 4096, "batch_size": 64}
    base = build(PredictConfig, {"engine": engine_spec, "sampling": sampling, "parse_workers": 2}, "predict")
    blocks = strategy_blocks(n, max_new_tokens, encoder or path, str(index))
    fields = {name: getattr(base, name) for name in base.__dataclass_fields__}
    chosen = [s.strip() for s in strategies.split(",") if s.strip()]
    table = []
    with make_engine(base.engine) as engine:
        for name in chosen:
            if name == "budget":  # the adaptive sampler gets exactly the time plain voting took
                sc_seconds = next((e["seconds_total"] for e in table if e["strategy"] == "sc"), 60.0)
                rounds = max(1, n // 2)  # up to twice sc's samples where they are needed
                blocks["budget"] = build_block("budget", {"time_budget_s": sc_seconds, "round_size": rounds,
                                                          "max_n": 4 * rounds, "min_n": n, "probe_problems": 2,
                                                          "reserve_s": 0.02 * sc_seconds})
            config = SimpleNamespace(**{**fields, **blocks, "strategy": name})
            strategy = get_strategy(name)
            table += compare(engine, rows, {name: (strategy, config)})
    setup = {"model": model, "backend": backend, "problems": len(rows), "n": n, "max_new_tokens": max_new_tokens,
             "retrieval_encoder": encoder or f"{model} (stand-in)",
             "torch_threads": torch.get_num_threads()} | provenance()
    write_json(out, {"setup": setup, "table": table})
    click.echo(f"wrote {out}")


def strategy_blocks(n: int, max_new_tokens: int, encoder: str, index: str) -> dict:
    """Each strategy's params block, sized to cost about the same as `n` plain samples."""
    return {
        "rsa": build_block("rsa", {"population": n, "subset": min(2, n), "loops": 1}),
        # SmolLM2 has no think tags: the thinking ends at its budget and the answer is forced
        "s1": build_block("s1", {"think_start": "", "think_end": "</think>", "num_ignore": 1,
                                 "answer_start": "\nFinal answer: \\boxed{", "max_thinking_tokens": max_new_tokens,
                                 "max_answer_tokens": 16}),
        "tir": build_block("tir", {"max_calls": 2, "sandbox": {"wall_timeout_s": 5}}),
        "retrieval": build_block("retrieval", {"encoder": encoder, "index": index, "top_k": 2, "max_length": 256}),
    }


def build_block(name: str, values: dict):
    from ftllm.config import build
    from ftllm.infer.budget import BudgetConfig
    from ftllm.infer.strategies.retrieval import RetrievalConfig
    from ftllm.infer.strategies.rsa import RSAConfig
    from ftllm.infer.strategies.s1 import S1Config
    from ftllm.infer.strategies.tir import TIRConfig

    classes = {"rsa": RSAConfig, "s1": S1Config, "tir": TIRConfig, "retrieval": RetrievalConfig, "budget": BudgetConfig}
    return build(classes[name], values, name)


if __name__ == "__main__":
    main()
