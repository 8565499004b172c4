"""Self-consistency: many sampled solutions in, one boxed answer out.

1. Every sample's final answer is extracted with the grader's own settings (`ftllm.grade.answer_text`)
   in a guarded process pool: a parse that crashes or hangs makes that sample "unparseable".
2. Answers are grouped greedily into equivalence classes: an answer joins the first class whose
   representative it matches *in both directions* under the problem's `evaluation_method`, with the same
   fallback triggers (`ftllm.grade.equivalent`): the grader is not symmetric, and a vote must not merge
   answers it would score differently against some gold.
3. The largest class wins; ties go to the larger summed log-probability, then to first appearance.
   (Sampling skips per-token logprobs by default; `ftllm.infer.strategies.base.break_ties` scores just the
   tied samples afterwards and calls `rerank`.)
4. `output` is `\\boxed{answer}` with the class's most frequent spelling (the shortest on a tie),
   never the reasoning. If no sample parses, `output` boxes the most common raw `\\boxed{}`
   content among the samples (first on a tie), or is `\\boxed{}` when there is none.

Voting can start before generation ends: `StreamingVoter` parses and clusters each problem's samples
as generation finishes them, and `vote_many(..., parsed=..., clustered=...)` only does what is left.
Pairs of plain numbers of different value skip Math-Verify (`surely_different`).

    v = vote(["... \\boxed{1/2}", "... \\boxed{0.5}", "... \\boxed{3}"])
    v.output  # '\\boxed{1/2}'  (class of size 2)
"""
from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence

import sympy

from ftllm.grade import answer_text, answers_match, equivalent, extract_answer
from ftllm.grade.clean import boxed_spans
from ftllm.infer.pool import GuardedPool, die_with_parent, own_progress_lock, run_guarded


@dataclasses.dataclass
class AnswerClass:
    representative: str  # the first member's answer, `$...$`
    size: int
    logprob: float  # summed over members (None logprobs count as 0)
    members: list[int]  # sample indices

    def __getitem__(self, key: str):  # classes also read like the dicts of the vote's JSON form
        return getattr(self, key)


@dataclasses.dataclass
class Vote:
    output: str  # `\boxed{...}`: what goes into the prediction row
    answer: str | None  # the winning answer (`$...$`), None when nothing parsed
    classes: list[AnswerClass]  # ranked: winner first
    n_unparseable: int
    answers: list[str | None]  # per sample: its parsed answer
    labels: list[int]  # per sample: index into `classes`, -1 when unparseable

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Ballot:
    """One problem's samples, as `vote_many` takes them."""

    texts: Sequence[str]
    logprobs: Sequence[float | None] | None = None
    method: str = "soft"


def vote(
    texts: Sequence[str],
    logprobs: Sequence[float | None] | None = None,
    method: str = "soft",
    workers: int = 2,
    timeout_s: int = 5,
) -> Vote:
    """Majority vote over one problem's samples (see the module docstring)."""
    return vote_many([Ballot(texts, logprobs, method)], workers=workers, timeout_s=timeout_s)[0]


def vote_many(
    ballots: Sequence[Ballot],
    workers: int = 2,
    timeout_s: int = 5,
    cluster_timeout_s: float = 300.0,
    progress: bool = False,
    parsed: dict[str, str | None] | None = None,
    clustered: dict[tuple, Vote] | None = None,
) -> list[Vote]:
    """Vote on many problems with one pool: parse every sample, then cluster each problem.

    What a `StreamingVoter` already did during generation is reused: `parsed` (sample text -> answer)
    and `clustered` ((texts, method) -> Vote); only the rest is done here.
    """
    answers_match("$1$", "$1$", "soft", timeout_s)  # warm Math-Verify's regex caches once; forked workers inherit them
    clustered = clustered or {}
    keys = [(tuple(str(t or "") for t in b.texts), b.method) for b in ballots]
    pending = [b for b, key in zip(ballots, keys) if key not in clustered]
    by_text = dict(parsed or {})
    todo = list(dict.fromkeys(str(t or "") for b in pending for t in b.texts if str(t or "") not in by_text))
    # identical samples are parsed once; a parse is at most two Math-Verify calls under their own
    # alarm, and the pool's hard kill is for C-level hangs
    fresh = run_guarded(_parse, [(t, timeout_s) for t in todo], workers, hard_timeout_s=parse_kill_s(timeout_s),
                        desc="parse" if progress else None)
    by_text.update(zip(todo, fresh))
    tasks = []
    for b in pending:
        answers = [by_text[str(t or "")] for t in b.texts]
        logprobs = list(b.logprobs) if b.logprobs is not None else [None] * len(b.texts)
        tasks.append((answers, logprobs, [str(t or "") for t in b.texts], b.method, timeout_s, cluster_timeout_s))
    votes = run_guarded(tally, tasks, workers, hard_timeout_s=cluster_kill_s(cluster_timeout_s, timeout_s),
                        desc="vote" if progress else None)
    # a problem whose clustering hung falls back to exact-string classes (no SymPy, cannot hang)
    fresh = iter(v if v is not None else tally(*t, exact=True) for v, t in zip(votes, tasks))
    return [clustered[key] if key in clustered else next(fresh) for key in keys]


def parse_kill_s(timeout_s: int) -> float:
    """When a parse is hung for good: two Math-Verify calls, each under its own `timeout_s` alarm, plus slack."""
    return 2 * timeout_s + 2


def cluster_kill_s(cluster_timeout_s: float, timeout_s: int) -> float:
    """When a problem's clustering is hung for good: its budget is checked between comparisons."""
    return cluster_timeout_s + 4 * timeout_s + 5


class _Voter:
    """`StreamingVoter`'s work, wherever it runs: a guarded pool that parses each text once and
    queues a problem's clustering the moment its last sample is parsed."""

    def __init__(self, workers: int = 2, timeout_s: int = 5, cluster_timeout_s: float = 300.0,
                 overlap_workers: int | None = None):
        """`overlap_workers` may be busy while generation runs (None: half, at least 1; 0: none); all after."""
        answers_match("$1$", "$1$", "soft", timeout_s)  # warm caches before forking the workers
        self.timeout_s, self.cluster_timeout_s, self.workers = timeout_s, cluster_timeout_s, workers
        self._lock = threading.Lock()
        self._answers: dict[str, str | None] = {}
        self._waiting: dict[str, list[dict]] = {}  # text -> problems still waiting for its parse
        self.pool = GuardedPool(_work, workers, parse_kill_s(timeout_s), on_result=self._on_result)
        self.pool.set_active(max(1, workers // 2) if overlap_workers is None else overlap_workers)

    def submit(self, texts: list[str], method: str | None, logprobs: list) -> None:
        group = {"texts": texts, "logprobs": logprobs, "method": method, "missing": set()}
        with self._lock:
            if method is not None:
                group["missing"] = {t for t in texts if t not in self._answers}
                for t in group["missing"]:
                    self._waiting.setdefault(t, []).append(group)
        for t in dict.fromkeys(texts):
            self.pool.submit(("parse", t), ("parse", t, self.timeout_s))
        if method is not None and not group["missing"]:
            self._cluster(group)

    def _on_result(self, key, value) -> None:
        if key[0] != "parse":
            return
        with self._lock:
            self._answers[key[1]] = value
            ready = []
            for group in self._waiting.pop(key[1], []):
                group["missing"].discard(key[1])
                if not group["missing"]:
                    ready.append(group)
        for group in ready:
            self._cluster(group)

    def _cluster(self, group: dict) -> None:
        with self._lock:
            answers = [self._answers[t] for t in group["texts"]]
        args = (answers, group["logprobs"], group["texts"], group["method"], self.timeout_s, self.cluster_timeout_s)
        self.pool.submit(("vote", tuple(group["texts"]), group["method"]), ("tally", *args),
                         hard_timeout_s=cluster_kill_s(self.cluster_timeout_s, self.timeout_s))

    def parsed(self) -> dict[str, str | None]:
        """{sample text: parsed answer}, once everything submitted is done (generation is over: all workers)."""
        self.pool.set_active(self.workers)
        return {k[1]: v for k, v in self.pool.results().items() if k[0] == "parse"}

    def votes(self) -> dict[tuple, Vote]:
        """{(texts, method): Vote} for every submitted problem whose clustering finished."""
        self.pool.set_active(self.workers)
        return {(k[1], k[2]): v for k, v in self.pool.results().items() if k[0] == "vote" and v is not None}

    def close(self) -> None:
        self.pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()



class StreamingVoter:
    """Parses and clusters each problem's samples while generation of the others goes on.

        with StreamingVoter(workers=8, timeout_s=5) as voter:
            samples = engine.generate_ids(prompts, sampling,
                                          on_finished=lambda ids, cs: voter.submit(cs, method_of(ids)))
            votes = vote_many(ballots, parsed=voter.parsed(), clustered=voter.votes())

    The work runs in a separate voter process that owns the worker pool: the generating process
    only pickles each finished problem once. (Dispatching thousands of small tasks from a thread
    inside vLLM's process fought its busy main thread for the GIL, slowing generation and
    starving the pool.) Every text is parsed once; a problem's clustering starts the moment its
    last sample is parsed. Finished votes are keyed by the ballot itself (texts, method), so
    `vote_many` uses one only for the very samples and method it was computed from. With
    `workers=0` everything runs in-process after generation (debugging).
    """

    def __init__(self, workers: int = 2, timeout_s: int = 5, cluster_timeout_s: float = 300.0,
                 overlap_workers: int | None = None):
        """`overlap_workers` may be busy while generation runs (None: half, at least 1; 0: none); all after."""
        args = (workers, timeout_s, cluster_timeout_s, overlap_workers)
        self._result: tuple[dict, dict] | None = None
        self._local = _Voter(*args) if workers <= 0 else None
        if self._local is None:
            ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            self._conn, child = ctx.Pipe()
            # not a daemon: daemons may not start the pool's workers; it exits when this end closes
            # or this process dies (see die_with_parent)
            inherited = (self._conn,) if ctx.get_start_method() == "fork" else ()
            self._proc = ctx.Process(target=_serve_voter, args=(child, args, os.getpid(), inherited),
                                     name="ftllm-voter")
            self._proc.start()
            child.close()

    def submit(self, completions, method: str | None = "soft") -> None:
        """Queue one problem's finished samples (completions or texts); `method` None: parse only, no vote."""
        texts = [str(getattr(c, "text", c) or "") for c in completions]
        logprobs = [getattr(c, "cumulative_logprob", None) for c in completions]
        if self._local is not None:
            self._local.submit(texts, method, logprobs)
            return
        try:
            self._conn.send(("submit", texts, method, logprobs))
        except (OSError, BrokenPipeError):
            pass  # the voter died: vote_many does the work after generation

    def _finish(self) -> tuple[dict, dict]:
        if self._result is None:
            if self._local is not None:
                self._result = (self._local.parsed(), self._local.votes())
            else:
                try:
                    self._conn.send(("finish",))
                    self._result = self._conn.recv()
                except (EOFError, OSError, BrokenPipeError):
                    self._result = ({}, {})
        return self._result

    def parsed(self) -> dict[str, str | None]:
        """{sample text: parsed answer}, once everything submitted is done (generation is over: all workers)."""
        return self._finish()[0]

    def votes(self) -> dict[tuple, Vote]:
        """{(texts, method): Vote} for every submitted problem whose clustering finished."""
        return self._finish()[1]

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            return
        try:
            self._conn.send(("close",))
        except (OSError, BrokenPipeError):
            pass
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve_voter(conn, args: tuple, parent_pid: int, inherited) -> None:
    """The voter process: apply messages from `StreamingVoter` to a `_Voter` until told to close."""
    die_with_parent(parent_pid, inherited)
    own_progress_lock()
    voter = _Voter(*args)
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            if message[0] == "submit":
                voter.submit(*message[1:])
            elif message[0] == "finish":
                conn.send((voter.parsed(), voter.votes()))
            else:
                return
    finally:
        voter.close()


def _work(kind: str, *args):
    """The voter's one worker function: a parse or a problem's clustering."""
    return _parse(*args) if kind == "parse" else tally(*args)


def _parse(text: str, timeout_s: int) -> str | None:
    return answer_text(text, timeout_s)


def tally(
    answers: list[str | None],
    logprobs: list[float | None],
    texts: list[str],
    method: str,
    timeout_s: int = 5,
    budget_s: float | None = None,
    exact: bool = False,
) -> Vote:
    """Cluster parsed answers and pick the winner; `exact` groups identical strings only.

    Past `budget_s` seconds the remaining answers are grouped by exact string (a problem with
    hundreds of distinct, slow-to-compare answers has no clear winner anyway).
    """
    deadline = None if budget_s is None else time.monotonic() + budget_s
    reps: list[str] = []
    labels: list[int] = []
    known: dict[str, int] = {}  # answer string -> class, so repeats skip the SymPy comparison
    for answer in answers:
        if answer is None:
            labels.append(-1)
            continue
        if answer not in known:
            late = deadline is not None and time.monotonic() > deadline
            known[answer] = _find_class(answer, reps, method, timeout_s, exact or late)
            if known[answer] == len(reps):
                reps.append(answer)
        labels.append(known[answer])
    return ranked(answers, labels, reps, logprobs, texts)


def ranked(answers: list[str | None], labels: list[int], reps: list[str], logprobs: list[float | None],
           texts: list[str]) -> Vote:
    """Classes from sample labels, ranked (size, summed logprob, first member), and the winner's `output`."""
    classes = [
        AnswerClass(
            representative=rep,
            size=sum(1 for lab in labels if lab == c),
            logprob=sum(float(lp or 0.0) for lp, lab in zip(logprobs, labels) if lab == c),
            members=[i for i, lab in enumerate(labels) if lab == c],
        )
        for c, rep in enumerate(reps)
    ]
    order = sorted(range(len(classes)), key=lambda c: (-classes[c].size, -classes[c].logprob, classes[c].members[0]))
    rank = {old: new for new, old in enumerate(order)}
    classes = [classes[c] for c in order]
    labels = [rank[lab] if lab >= 0 else -1 for lab in labels]
    n_unparseable = labels.count(-1)
    if not classes:
        return Vote(raw_box(texts), None, [], n_unparseable, list(answers), labels)
    winner = classes[0]
    spelling = canonical_spelling([answers[i] for i in winner.members])
    return Vote(_boxed(spelling), winner.representative, classes, n_unparseable, list(answers), labels)


def tied_for_first(v: Vote) -> list[int]:
    """Samples of every class tied with the winner on size (empty when the winner is alone at the top)."""
    if len(v.classes) < 2 or v.classes[1].size < v.classes[0].size:
        return []
    return [i for c in v.classes if c.size == v.classes[0].size for i in c.members]


def rerank(v: Vote, logprobs: list[float | None], texts: list[str]) -> Vote:
    """The same classes ranked again with per-sample `logprobs` (e.g. filled in for the tied samples only)."""
    return ranked(v.answers, v.labels, [c.representative for c in v.classes], logprobs, texts)


def _find_class(answer: str, reps: list[str], method: str, timeout_s: int, exact: bool) -> int:
    """Index of the first class `answer` belongs to (both-way match), or len(reps) for a new class."""
    for c, rep in enumerate(reps):
        if exact:
            if rep == answer:
                return c
        elif surely_different(rep, answer, timeout_s):
            continue
        elif equivalent(rep, answer, method, timeout_s):
            return c
    return len(reps)


# Spellings under which a grader fallback can equate numbers of different value: degrees (->radians),
# signs (\pm expansion), percent. Decimals are handled by a tolerance instead (see `surely_different`).
_FALLBACK_MARKS = ("\\circ", "°", "\\pm", "\\mp", "%", "deg")
_DECIMAL_PLACES = re.compile(r"\.(\d+)")


def surely_different(a: str, b: str, timeout_s: int = 5) -> bool:
    """True when both answers are plain real numbers of different value: no method or fallback can match them.

    A shortcut for voting only. A non-match costs Math-Verify a simplify plus every fallback (tens of
    milliseconds), and most pairs a vote compares are distinct numbers. False means "compare properly".
    """
    x, y = _plain_number(a, timeout_s), _plain_number(b, timeout_s)
    if x is None or y is None:
        return False
    # the rounding fallback rounds one side to the other's decimal places: values further apart than
    # one unit in the last place of either decimal can never round to each other
    places = max((len(d) for d in _DECIMAL_PLACES.findall(a + " " + b)), default=None)
    slack = sympy.Float(10) ** -places if places is not None else 0
    return bool(abs(x - y) > max(slack, 1e-15 * max(1.0, abs(x), abs(y))))


@functools.lru_cache(maxsize=4096)
def _plain_number(answer: str, timeout_s: int) -> sympy.Float | None:
    """The value of a closed-form real number without symbols or fallback-prone spellings, else None."""
    if any(mark in answer for mark in _FALLBACK_MARKS):
        return None
    from ftllm.grade.compare import guarded, sympy_items

    items = sympy_items(extract_answer(answer, timeout_s))
    if len(items) != 1 or not getattr(items[0], "is_number", False):
        return None
    value = guarded(lambda: items[0].evalf(30), timeout_s)
    if value is False or not value.is_real or not value.is_finite:
        return None
    return value


def canonical_spelling(members: list[str]) -> str:
    """The spelling most members used; the shortest on a tie (strict grading rewards the simplest form)."""
    counts = Counter(members)
    return min(counts, key=lambda s: (-counts[s], len(s), members.index(s)))


def _boxed(answer: str) -> str:
    inner = answer.strip()
    if inner.startswith("$") and inner.endswith("$") and len(inner) >= 2:
        inner = inner[1:-1]
    return "\\boxed{" + inner.strip() + "}"


def raw_box(texts: list[str]) -> str:
    """Fallback output when nothing parses: the most common last `\\boxed{}` content, else an empty box."""
    contents = []
    for text in texts:
        spans = boxed_spans(text)
        if spans:
            start, end = spans[-1]
            contents.append(text[start:end].strip())
    if not contents:
        return "\\boxed{}"
    counts = Counter(contents)
    return "\\boxed{" + min(counts, key=lambda s: (-counts[s], contents.index(s))) + "}"
