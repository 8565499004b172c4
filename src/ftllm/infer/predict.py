"""The predict stage's library side: problems in, voted `output` and every sample out.

    results = predict(config, rows, out_dir)   # writes out_dir/{predictions.jsonl, samples.parquet}

Strategies are plain functions `(engine, rows, config) -> list[StrategyResult]` (see
`ftllm.infer.strategies.base`), registered by name in `ftllm.infer.strategies.STRATEGIES`. Plain self-consistency
("sc") samples `config.sampling.n` solutions per problem in ONE `engine.chat` call (vLLM
prefills each prompt once and forks the n samples) and votes them all with one parse pool.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

from ftllm.config import load_attr
from ftllm.engine.base import PROMPT_TOO_LONG
from ftllm.infer.strategies import STRATEGIES
from ftllm.infer.strategies.base import EMPTY_OUTPUT, StrategyResult, break_ties, build_conversation, request_seeds
from ftllm.io import ID_TYPES, strip_controls

log = logging.getLogger(__name__)


def run_sc(engine, rows: list[dict], config) -> list[StrategyResult]:
    """Self-consistency: n samples per problem from one batched call, then the equivalence-class vote.

    Each problem's samples are parsed and clustered in worker processes as soon as vLLM finishes
    them, while it is still generating the others; after generation only the last problems' voting
    remains (and, for ties, one scoring pass).
    """
    from ftllm.infer.vote import Ballot, StreamingVoter, vote_many

    conversations = [build_conversation(r, config) for r in rows]
    prompts = engine.render_chats(conversations, **dict(config.prompt.chat_template_kwargs))
    methods = [r.get("evaluation_method") or "soft" for r in rows]
    method_of: dict[tuple, set] = {}
    for ids, method in zip(prompts, methods):
        method_of.setdefault(tuple(ids), set()).add(method)

    def vote_early(ids, completions):
        known = method_of.get(tuple(ids), set())
        # identical prompts under different methods: parse now, cluster after generation
        voter.submit(completions, next(iter(known)) if len(known) == 1 else None)

    start = time.monotonic()
    with StreamingVoter(config.parse_workers, config.parse_timeout_s, config.vote_timeout_s,
                        config.overlap_workers) as voter:
        samples = engine.generate_ids(prompts, config.sampling, on_finished=vote_early,
                                      seeds=request_seeds(config, rows))
        generated = time.monotonic()
        seconds = (generated - start) / max(1, len(rows))
        ballots = [Ballot([c.text for c in cs], [c.cumulative_logprob for c in cs], m)
                   for cs, m in zip(samples, methods)]
        votes = vote_many(
            ballots, workers=config.parse_workers, timeout_s=config.parse_timeout_s,
            cluster_timeout_s=config.vote_timeout_s, progress=True, parsed=voter.parsed(), clustered=voter.votes(),
        )
        voted = time.monotonic()
    closed = time.monotonic()  # the voter process and its pool have exited
    votes = break_ties(engine, lambda k, i: prompts[k], samples, votes)
    # where a predict's time goes past vLLM: on the H200 rehearsal 76 s passed between generation's end and the
    # tie-break scoring for one model, 12 s for another, with nothing in the log to say which part
    phases = {"generate": generated - start, "vote_after_generation": voted - generated,
              "close_voter": closed - voted, "tie_break": time.monotonic() - closed}
    phases = {k: round(v, 2) for k, v in phases.items()}
    log.info("sc: generated in %.1f s; then voting %.1f s, closing the voter %.1f s, tie-break scoring %.1f s",
             *phases.values())
    return [
        StrategyResult(v.output or EMPTY_OUTPUT, list(cs), sum(c.num_tokens for c in cs), seconds,
                       {"vote": v, "phases_s": phases})
        for cs, v in zip(samples, votes)
    ]


# JSON types of the problem fields predict reads (ids: text or integer). Ids must be unique: the
# competition takes one output per id, so a duplicate is an error naming both lines, not a warning.
PROBLEM_TYPES = {"id": ID_TYPES, "problem": (str,), "category": (str,), "unit": (str,), "evaluation_method": (str,)}


def clean_output(text: str) -> str:
    """`text` without control characters, whatever strategy or engine produced it."""
    return strip_controls(text)


def get_strategy(name: str) -> Callable:
    return load_attr(STRATEGIES[name])


def run_predictions(config, rows: list[dict]) -> list[StrategyResult]:
    """Load the engine, run the configured strategy, release the engine."""
    from ftllm.engine import make_engine

    with make_engine(config.engine) as engine:
        return get_strategy(config.strategy)(engine, rows, config)


def annotate_votes(config, rows: list[dict], results: list[StrategyResult]) -> list:
    """The `Vote` behind each result: the strategy's own when it kept one, else a fresh vote of its samples."""
    from ftllm.infer.vote import Ballot, Vote, vote_many

    votes = [r.info.get("vote") if isinstance(r.info.get("vote"), Vote) else None for r in results]
    missing = [i for i, v in enumerate(votes) if v is None]
    ballots = [
        Ballot([c.text for c in results[i].samples], [c.cumulative_logprob for c in results[i].samples],
               rows[i].get("evaluation_method") or "soft")
        for i in missing
    ]
    fresh = vote_many(ballots, workers=config.parse_workers, timeout_s=config.parse_timeout_s,
                      cluster_timeout_s=config.vote_timeout_s) if ballots else []
    for i, v in zip(missing, fresh):
        votes[i] = v
    return votes


def sample_records(rows: list[dict], results: list[StrategyResult], votes: list) -> list[dict]:
    """One record per sample: what it said, what it cost, what it parsed to and which class it joined."""
    records = []
    for row, result, vote in zip(rows, results, votes):
        for j, c in enumerate(result.samples):
            label = vote.labels[j] if j < len(vote.labels) else -1
            records.append({
                "id": row["id"],
                "sample": j,
                "text": c.text,
                "num_tokens": int(c.num_tokens),
                "logprob": None if c.cumulative_logprob is None else float(c.cumulative_logprob),
                "finish_reason": c.finish_reason,
                "answer": vote.answers[j] if j < len(vote.answers) else None,
                "class_index": int(label),
                "class_size": int(vote.classes[label].size) if label >= 0 else 0,
            })
    return records


def predict(config, rows: list[dict], out_dir: str | Path) -> dict:
    """Run the strategy on `rows`; write predictions.jsonl (the input's grader keys + output) and
    samples.parquet atomically."""
    from ftllm.grade.files import prediction_row
    from ftllm.io import atomic_path, output_lock, write_jsonl, write_parquet
    from ftllm.reaper import start_reaper

    start = time.monotonic()
    start_reaper()  # vLLM's engine processes, the voter and its workers all go if this process is killed
    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    with output_lock(out_dir):  # taken before generating: a second run on the same --out stops at once
        results = run_predictions(config, rows)
        votes = annotate_votes(config, rows, results)
        # only keys the official grader accepts: any other key makes it skip the row
        predictions = [prediction_row(row, clean_output(result.output) or EMPTY_OUTPUT)
                       for row, result in zip(rows, results)]
        with atomic_path(out_dir) as tmp:
            tmp.mkdir(parents=True)
            write_jsonl(tmp / "predictions.jsonl", predictions)
            write_parquet(tmp / "samples.parquet", sample_records(rows, results, votes))
    samples = sum(len(r.samples) for r in results)
    phases = next((r.info["phases_s"] for r in results if "phases_s" in r.info), None)  # the whole run's, once
    return {
        **({"phases_s": phases} if phases else {}),
        "problems": len(rows),
        "samples": samples,
        "tokens": sum(r.tokens for r in results),
        "unparseable_samples": sum(v.n_unparseable for v in votes),
        "empty_outputs": sum(p["output"] == EMPTY_OUTPUT for p in predictions),
        # rows whose prompt did not fit engine.max_model_len: not generated, output empty (logged by the engine)
        "prompts_too_long": sum(
            bool(r.samples) and all(c.finish_reason == PROMPT_TOO_LONG for c in r.samples) for r in results
        ),
        "seconds": round(time.monotonic() - start, 3),
    }


def with_model(config, model: str | None):
    """The config with `engine.model` replaced (the stage's --model, the submission's --model_dir)."""
    if not model:
        return config
    return dataclasses.replace(config, engine=dataclasses.replace(config.engine, model=str(model)))


def predict_file(config, input_path: str | Path, out_dir: str | Path, model: str | None = None) -> dict:
    """The `predict` stage: problems from a JSONL file (`model` overrides `engine.model`); returns metrics."""
    from ftllm.io import read_jsonl

    rows = read_jsonl(input_path, required=("id", "problem"), types=PROBLEM_TYPES, unique="id")
    return predict(with_model(config, model), rows, out_dir)
