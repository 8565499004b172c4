"""Where self-consistency voting spends its time: per-text parsing and per-problem clustering.

Inputs: 64 problems of the project's eval set (`ftllm.evalset`, 16 templates x 4) x 16 samples, written by a
seeded generator that imitates a small model's answers (SmolLM2-135M at up to 384 new tokens): long-winded,
LaTeX-heavy reasoning ending in `\\boxed{...}` (mostly right, often wrong), "the answer is" without a box,
repetition loops cut at the token limit, unbalanced braces, huge expressions and digit runs, `\\pm`, stray
Japanese, truncated text with no answer at all. Synthetic, not sampled: real generation on this machine's
CPU would take longer than the measurement; the shapes are those seen in the H200 logs (67 of 1,024 of one
model's samples unparseable).

Measured, with `--workers` worker processes:
1. `parse`: `ftllm.infer.vote._parse` (the grader's answer extraction) of each distinct text, one at a time in
   this process (each under Math-Verify's own alarm): median, p90, p99, max; texts over 1 s; texts that timed
   out (returned nothing after >= timeout_s); the slowest shapes.
2. `cluster`: `tally` of each problem given its parsed answers (equivalence classes), in this process.
3. `streaming`: a `StreamingVoter` fed problem by problem every `--gap-ms` (as vLLM finishes them), then
   `vote_many(parsed=..., clustered=...)`; the time from the last submit to the votes is what predict waits
   for after generation ("voting" in its log).
4. `vote_many`: everything after generation from scratch (no streaming), with the same workers.
The votes of 3 and 4 must agree (`same_votes`).

    OMP_NUM_THREADS=1 python benchmarks/vote_speed.py --label after --out benchmarks/results/vote_speed.json
    python benchmarks/vote_speed.py --profile      # cProfile of the parse of the slowest texts
"""
from __future__ import annotations

import cProfile
import io
import json
import pstats
import random
import statistics
import sys
import time
from pathlib import Path

import click

SHAPES = ("boxed", "boxed_wrong", "answer_is", "loop", "unbalanced", "huge", "digits", "pm", "japanese", "truncated",
          "nested")
WEIGHTS = (40, 18, 10, 8, 4, 4, 3, 3, 4, 4, 2)

_FILLER = [
    "First, let's understand the problem.", "We need to find the value.", "Let's break it down step by step.",
    "So, we can write", "Therefore,", "Now, substituting the values, we get", "Let me double-check this.",
    "This means that", "Simplifying, we have", "Using the formula", "Hence", "Wait, let's recompute.",
    "Step 1: Identify the given information.", "Step 2: Apply the formula.", "Step 3: Simplify.",
]


def _num(r: random.Random) -> str:
    return str(r.randint(-30, 99))


def _expr(r: random.Random, depth: int = 0) -> str:
    pick = r.random()
    if depth > 2 or pick < 0.3:
        return r.choice([_num(r), "x", "y", f"{r.randint(2, 9)}x", "\\pi"])
    if pick < 0.5:
        return f"\\frac{{{_expr(r, depth + 1)}}}{{{_expr(r, depth + 1)}}}"
    if pick < 0.6:
        return f"\\sqrt{{{_expr(r, depth + 1)}}}"
    if pick < 0.75:
        return f"({_expr(r, depth + 1)})^{{{r.randint(2, 3)}}}"
    return f"{_expr(r, depth + 1)} {r.choice('+-')} {_expr(r, depth + 1)}"


def _reasoning(r: random.Random, problem: str, sentences: int) -> str:
    out = [f"To solve {problem[:60]}, we proceed as follows."]
    for _ in range(sentences):
        out.append(r.choice(_FILLER))
        if r.random() < 0.7:
            a, b = _expr(r), _expr(r)
            out.append(r.choice([f"$${a} = {b}$$", f"\\[ {a} = {b} \\]", f"${a} = {b}$", f"\\( {a} \\)"]))
    return "\n".join(out)


def _wrong(r: random.Random, gold: str) -> str:
    return r.choice([_num(r), _expr(r), gold.strip("$") + r.choice(["+1", "^2", "", "-1"]),
                     f"\\frac{{{r.randint(1, 20)}}}{{{r.randint(2, 20)}}}"])


def sample_text(r: random.Random, problem: str, gold: str, shape: str) -> str:
    """One imitated small-model answer of the given shape."""
    body = _reasoning(r, problem, r.randint(3, 14))
    answer = gold.strip("$")
    if shape == "boxed":
        return body + f"\n\nThe final answer is: $\\boxed{{{answer}}}$"
    if shape == "boxed_wrong":
        return body + f"\n\nSo the answer is \\boxed{{{_wrong(r, gold)}}}."
    if shape == "answer_is":
        return body + f"\nTherefore the answer is ${r.choice([answer, _wrong(r, gold)])}$."
    if shape == "loop":  # a repetition loop cut at the token limit (~384 tokens, ~1,500 characters)
        unit = r.choice([f"So, ${_expr(r)} = {_expr(r)}$. ", "Wait, let me recompute. ", f"{_expr(r)} = ",
                         f"\\frac{{{_num(r)}}}{{{_expr(r)}}} + ", f"$x = {_num(r)}$, then "])
        text = body[: r.randint(100, 600)] + "\n" + unit * 200
        return text[: r.randint(1200, 1800)]
    if shape == "unbalanced":
        return body + f"\n\\boxed{{\\frac{{{answer}}}{{{_expr(r)}" + "{" * r.randint(1, 5)
    if shape == "huge":
        terms = " + ".join(f"{r.randint(2, 99)}x^{{{r.randint(2, 40)}}}" for _ in range(r.randint(20, 80)))
        tower = f"{r.randint(2, 9)}^{{{r.randint(2, 9)}^{{{r.randint(20, 99)}}}}}"
        return body + r.choice([f"\n$${terms}$$\n\\boxed{{{terms}}}", f"\n\\boxed{{{tower}}}",
                                f"\n$$ ({terms})^{{{r.randint(5, 30)}}} $$"])
    if shape == "digits":  # runaway digits: a number that never ends
        return body + "\n\\boxed{" + "".join(r.choice("0123456789") for _ in range(r.randint(200, 1200))) + "}"
    if shape == "pm":
        return body + f"\n\\boxed{{{answer} \\pm \\sqrt{{{r.randint(2, 30)}}}}}"
    if shape == "japanese":
        return "答えは次のとおりです。\n" + body + f"\n答え：${r.choice([answer, _wrong(r, gold)])}$"
    if shape == "truncated":  # ran out of tokens mid-derivation: no box, no answer phrase
        return (body * 3)[: r.randint(800, 1600)]
    if shape == "nested":  # deep fraction towers (the screen treats these as unparseable)
        depth = r.randint(8, 20)
        return body + "\n\\boxed{" + "\\frac{1}{1+" * depth + "x" + "}" * (2 * depth) + "}"
    raise ValueError(shape)


def make_inputs(problems: int = 64, samples: int = 16, seed: int = 0) -> list[dict]:
    """[{"problem", "solution", "method", "texts", "shapes"}]: deterministic for a seed."""
    from ftllm.evalset import EvalsetConfig, build_evalset

    rows = build_evalset(EvalsetConfig(per_template=max(1, -(-problems // 16))))[:problems]
    r = random.Random(seed)
    out = []
    for row in rows:
        shapes = r.choices(SHAPES, WEIGHTS, k=samples)
        texts = [sample_text(r, row["problem"], row["solution"], s) for s in shapes]
        out.append({"problem": row["problem"], "solution": row["solution"], "method": row["evaluation_method"],
                    "texts": texts, "shapes": shapes})
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def _summary(xs: list[float]) -> dict:
    return {"n": len(xs), "total_s": round(sum(xs), 3), "median_s": round(statistics.median(xs), 4),
            "p90_s": round(_pct(xs, 0.9), 4), "p99_s": round(_pct(xs, 0.99), 4), "max_s": round(max(xs), 3)}


def measure_parse(inputs: list[dict], timeout_s: int) -> tuple[dict, dict]:
    from ftllm.infer.vote import _parse

    seconds, by_shape, answers, slow = [], {}, {}, []
    for item in inputs:
        for text, shape in zip(item["texts"], item["shapes"]):
            if text in answers:
                continue
            t0 = time.perf_counter()
            answers[text] = _parse(text, timeout_s)
            dt = time.perf_counter() - t0
            seconds.append(dt)
            by_shape.setdefault(shape, []).append(dt)
            slow.append((dt, shape, answers[text] is None, text))
    slow.sort(key=lambda s: -s[0])
    report = _summary(seconds) | {
        "over_1s": sum(s > 1 for s in seconds),
        "timed_out": sum(1 for dt, _, none, _ in slow if none and dt >= timeout_s),
        "unparseable": sum(a is None for a in answers.values()),
        "by_shape_total_s": {k: round(sum(v), 3) for k, v in sorted(by_shape.items(), key=lambda kv: -sum(kv[1]))},
        "slowest": [{"seconds": round(dt, 3), "shape": shape, "unparsed": none, "head": text[-120:]}
                    for dt, shape, none, text in slow[:5]],
    }
    return report, answers


def measure_cluster(inputs: list[dict], answers: dict, timeout_s: int) -> dict:
    from ftllm.infer.vote import tally

    seconds, outputs = [], []
    for item in inputs:
        t0 = time.perf_counter()
        v = tally([answers[t] for t in item["texts"]], [None] * len(item["texts"]), item["texts"], item["method"],
                  timeout_s)
        seconds.append(time.perf_counter() - t0)
        outputs.append(v.output)
    return _summary(seconds), outputs


def measure_streaming(inputs: list[dict], workers: int, timeout_s: int, cluster_timeout_s: float, gap_ms: float):
    from ftllm.infer.vote import Ballot, StreamingVoter, vote_many

    ballots = [Ballot(item["texts"], None, item["method"]) for item in inputs]
    t0 = time.monotonic()
    with StreamingVoter(workers, timeout_s, cluster_timeout_s) as voter:
        for item in inputs:  # generation finishing problems one after another
            time.sleep(gap_ms / 1000)
            voter.submit(item["texts"], item["method"])
        generated = time.monotonic()
        votes = vote_many(ballots, workers=workers, timeout_s=timeout_s, cluster_timeout_s=cluster_timeout_s,
                          parsed=voter.parsed(), clustered=voter.votes())
        voted = time.monotonic()
    closed = time.monotonic()
    return {"generation_s": round(generated - t0, 2), "vote_after_generation_s": round(voted - generated, 2),
            "close_voter_s": round(closed - voted, 2)}, votes


def measure_vote_many(inputs: list[dict], workers: int, timeout_s: int, cluster_timeout_s: float):
    from ftllm.infer.vote import Ballot, vote_many

    ballots = [Ballot(item["texts"], None, item["method"]) for item in inputs]
    t0 = time.monotonic()
    votes = vote_many(ballots, workers=workers, timeout_s=timeout_s, cluster_timeout_s=cluster_timeout_s)
    return {"seconds": round(time.monotonic() - t0, 2)}, votes


@click.command()
@click.option("--problems", default=64, show_default=True)
@click.option("--samples", default=16, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=8, show_default=True, help="params: parse_workers")
@click.option("--timeout-s", default=5, show_default=True, help="params: parse_timeout_s")
@click.option("--cluster-timeout-s", default=60.0, show_default=True, help="params: vote_timeout_s")
@click.option("--gap-ms", default=250.0, show_default=True, help="streaming: pause between finished problems")
@click.option("--label", default=None, help="key under which this run goes into --out (e.g. before, after)")
@click.option("--out", default=None, type=click.Path(dir_okay=False))
@click.option("--profile", is_flag=True, help="only cProfile the parse of every text, print the top functions")
@click.option("--pools/--no-pools", default=True, show_default=True,
              help="also time StreamingVoter and vote_many with --workers processes")
@click.option("--dump", default=None, type=click.Path(dir_okay=False), help="write the inputs as JSON")
def main(problems, samples, seed, workers, timeout_s, cluster_timeout_s, gap_ms, label, out, profile, pools,
         dump):
    from ftllm.provenance import provenance

    inputs = make_inputs(problems, samples, seed)
    if dump:
        Path(dump).write_text(json.dumps(inputs, ensure_ascii=False))
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        report, _ = measure_parse(inputs, timeout_s)
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(40)
        print(json.dumps(report, indent=1, ensure_ascii=False))
        print(s.getvalue())
        return
    parse, answers = measure_parse(inputs, timeout_s)
    cluster, outputs = measure_cluster(inputs, answers, timeout_s)
    streaming = whole = same = None
    if pools:
        streaming, votes_a = measure_streaming(inputs, workers, timeout_s, cluster_timeout_s, gap_ms)
        whole, votes_b = measure_vote_many(inputs, workers, timeout_s, cluster_timeout_s)
        same = [v.output for v in votes_a] == [v.output for v in votes_b] == outputs
    result = {
        "inputs": {"problems": len(inputs), "samples": samples, "seed": seed,
                   "texts": sum(len(i["texts"]) for i in inputs), "distinct_texts": len(answers),
                   "mean_chars": round(statistics.mean(len(t) for i in inputs for t in i["texts"]))},
        "settings": {"workers": workers, "timeout_s": timeout_s, "cluster_timeout_s": cluster_timeout_s,
                     "gap_ms": gap_ms},
        "parse_in_process": parse,
        "cluster_in_process": cluster,
        "streaming": streaming,
        "vote_many_from_scratch": whole,
        "same_votes": same,
        "outputs": outputs,
        "n_unparseable": sum(a is None for a in answers.values()),
    } | provenance()
    print(json.dumps({k: v for k, v in result.items() if k != "outputs"}, indent=1, ensure_ascii=False))
    if out:
        path = Path(out)
        doc = json.loads(path.read_text()) if path.exists() else {}
        if label:
            doc[label] = result
        else:
            doc = result
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
