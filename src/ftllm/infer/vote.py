"""Self-consistency: many sampled solutions in, one boxed answer out.

1. Every sample's final answer is extracted with the grader's own settings (`ftllm.grade.answer_text`)
   in a guarded process pool: a parse that crashes or hangs makes that sample "unparseable".
2. Answers are grouped greedily into equivalence classes: an answer joins the first class whose
   representative it matches *in both directions* under the problem's `evaluation_method`
   (Math-Verify is not symmetric, and a vote must not merge what the grader would split).
3. The largest class wins; ties go to the larger summed log-probability, then to first appearance.
4. `output` is `\\boxed{answer}` with the class's most frequent spelling (the shortest on a tie),
   never the reasoning. If no sample parses, `output` boxes the most common raw `\\boxed{}`
   content among the samples (first on a tie), or is `\\boxed{}` when there is none.

    v = vote(["... \\boxed{1/2}", "... \\boxed{0.5}", "... \\boxed{3}"])
    v.output  # '\\boxed{1/2}'  (class of size 2)
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter
from typing import Sequence

from ftllm.grade import answer_text, answers_match
from ftllm.grade.clean import boxed_spans
from ftllm.infer.pool import run_guarded


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
    ballots: Sequence[Ballot], workers: int = 2, timeout_s: int = 5, cluster_timeout_s: float = 300.0, progress: bool = False
) -> list[Vote]:
    """Vote on many problems with one pool: parse every sample, then cluster each problem."""
    answers_match("$1$", "$1$", "soft", timeout_s)  # warm Math-Verify's regex caches once; forked workers inherit them
    flat = [(str(t or ""), timeout_s) for b in ballots for t in b.texts]
    unique = list(dict.fromkeys(flat))  # identical samples are parsed once
    # a parse is at most two Math-Verify calls under their own alarm; the hard kill is for C-level hangs
    parsed = run_guarded(_parse, unique, workers, hard_timeout_s=2 * timeout_s + 2, desc="parse" if progress else None)
    by_text = dict(zip((t for t, _ in unique), parsed))
    tasks = []
    for b in ballots:
        answers = [by_text[str(t or "")] for t in b.texts]
        logprobs = list(b.logprobs) if b.logprobs is not None else [None] * len(b.texts)
        tasks.append((answers, logprobs, [str(t or "") for t in b.texts], b.method, timeout_s, cluster_timeout_s))
    hard_timeout_s = cluster_timeout_s + 4 * timeout_s + 5  # the budget is checked between comparisons
    votes = run_guarded(tally, tasks, workers, hard_timeout_s=hard_timeout_s, desc="vote" if progress else None)
    # a problem whose clustering hung falls back to exact-string classes (no SymPy, cannot hang)
    return [v if v is not None else tally(*t, exact=True) for v, t in zip(votes, tasks)]


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


def _find_class(answer: str, reps: list[str], method: str, timeout_s: int, exact: bool) -> int:
    """Index of the first class `answer` belongs to (both-way match), or len(reps) for a new class."""
    for c, rep in enumerate(reps):
        if exact:
            if rep == answer:
                return c
        elif answers_match(rep, answer, method, timeout_s) and answers_match(answer, rep, method, timeout_s):
            return c
    return len(reps)


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
