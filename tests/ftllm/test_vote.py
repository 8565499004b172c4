"""Self-consistency voting: equivalence classes, ties, unparseable samples, and hostile outputs."""
import random
import time

import pytest

from ftllm.grade import answer_text, answers_match
from ftllm.infer.pool import GuardedPool, run_guarded
from ftllm.infer.vote import (
    Ballot,
    StreamingVoter,
    canonical_spelling,
    raw_box,
    rerank,
    surely_different,
    tally,
    tied_for_first,
    vote,
    vote_many,
)


def test_equivalent_spellings_form_one_class():
    texts = ["so \\boxed{1/2}", "\\boxed{0.5}", "\\boxed{3}", "nothing here", "\\boxed{\\frac{1}{2}}", "\\boxed{3}"]
    v = vote(texts, [-1, -2, -0.5, None, -1, -0.1], workers=1)
    assert [c.size for c in v.classes] == [3, 2]
    assert v.classes[0].members == [0, 1, 4] and v.classes[1].members == [2, 5]
    assert v.classes[0]["size"] == 3  # classes also read like dicts
    assert v.n_unparseable == 1 and v.labels == [0, 0, 1, -1, 0, 1]
    assert v.output == "\\boxed{\\frac{1}{2}}"
    assert answers_match(v.answer, v.output)  # the output holds only the answer, and parses back to it


def test_tie_goes_to_logprob_then_first_appearance():
    assert vote(["\\boxed{3}", "\\boxed{4}"], [-5.0, -1.0], workers=0).output == "\\boxed{4}"
    assert vote(["\\boxed{3}", "\\boxed{4}"], workers=0).output == "\\boxed{3}"
    assert vote(["\\boxed{3}", "\\boxed{4}", "\\boxed{4}"], [0.0, -9.0, -9.0], workers=0).output == "\\boxed{4}"


def test_method_decides_equivalence():
    texts = ["\\boxed{2(x+1)}", "\\boxed{2x+2}", "\\boxed{2x+2}"]
    assert len(vote(texts, method="soft", workers=0).classes) == 1
    strict = vote(texts, method="strict", workers=0)
    assert [c.size for c in strict.classes] == [2, 1] and strict.output == "\\boxed{2x+2}"


def test_nothing_parses_still_gives_a_string():
    v = vote(["", "I give up", "\\boxed{\\frac{1}{"], workers=0)
    assert v.classes == [] and v.answer is None and v.n_unparseable == 3
    assert v.output.startswith("\\boxed{")
    assert raw_box(["no box", "x"]) == "\\boxed{}"
    assert raw_box(["\\boxed{a!}", "\\boxed{b!} \\boxed{c!}", "\\boxed{c!}"]) == "\\boxed{c!}"


def test_canonical_spelling_prefers_frequent_then_short():
    assert canonical_spelling(["$0.50$", "$0.5$", "$0.50$"]) == "$0.50$"
    assert canonical_spelling(["$\\frac{2}{4}$", "$\\frac12$"]) == "$\\frac12$"


def test_vote_many_matches_single_votes():
    ballots = [Ballot(["\\boxed{1}", "\\boxed{2}", "\\boxed{2}"]), Ballot(["\\boxed{x}", "\\boxed{x}"], [-1, -1])]
    many = vote_many(ballots, workers=2)
    assert [v.output for v in many] == ["\\boxed{2}", "\\boxed{x}"]
    assert tally(["$1$", None], [None, None], ["", ""], "soft", exact=True).output == "\\boxed{1}"


@pytest.mark.parametrize("a, b, different", [
    ("$3$", "$4$", True),
    ("$\\pi$", "$3$", True),
    ("$0.33$", "$0.35$", True),
    ("$\\sqrt{8}$", "$2\\sqrt{2}$", False),  # equal value: strict may still split them, so compare properly
    ("$\\frac{1}{3}$", "$0.333$", False),  # the grader's rounding fallback can equate these
    ("$0.3$", "$\\frac{1}{3}$", False),
    ("$30^\\circ$", "$\\frac{\\pi}{6}$", False),  # degrees -> radians
    ("$1\\pm\\sqrt{2}$", "$1$", False),
    ("$2i$", "$2$", False),  # a symbol (the imaginary unit under complex)
    ("$x=2$", "$3$", False),
    ("$1, 2$", "$1$", False),
])
def test_surely_different_only_for_plain_numbers(a, b, different):
    assert surely_different(a, b) is different
    if different:  # the shortcut never contradicts the grader's own comparison, in any method
        assert not any(answers_match(a, b, m) or answers_match(b, a, m) for m in ("soft", "strict", "complex"))


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_voter_feeds_the_vote(workers):
    texts = ["\\boxed{1/2}", "\\boxed{0.5}", "\\boxed{3}"]
    other = ["\\boxed{3}", "\\boxed{2(x+1)}", "\\boxed{2x+2}"]
    with StreamingVoter(workers=workers, timeout_s=5) as voter:
        voter.submit(texts)  # soft
        voter.submit(other, "strict")
        voter.submit(["\\boxed{9}"], None)  # parse only
        parsed, clustered = voter.parsed(), voter.votes()
    assert parsed == {t: answer_text(t) for t in dict.fromkeys(texts + other + ["\\boxed{9}"])}
    assert set(clustered) == {(tuple(texts), "soft"), (tuple(other), "strict")}
    ballots = [Ballot(texts), Ballot(other, method="strict"), Ballot(other, method="soft")]
    streamed = vote_many(ballots, workers=1, parsed=parsed, clustered=clustered)
    fresh = vote_many(ballots, workers=1)
    assert [v.to_dict() for v in streamed] == [v.to_dict() for v in fresh]
    assert [len(v.classes) for v in streamed] == [2, 3, 2]  # the soft ballot of `other` was clustered afresh


def test_rerank_breaks_a_tie_without_reclustering():
    texts = ["\\boxed{3}", "\\boxed{4}", "\\boxed{5}", "\\boxed{5}", "\\boxed{4}"]
    v = vote(texts, workers=0)
    assert v.output == "\\boxed{4}" and sorted(tied_for_first(v)) == [1, 2, 3, 4]
    better = rerank(v, [None, -3.0, -1.0, -1.0, -3.0], texts)
    assert better.output == "\\boxed{5}" and [c.size for c in better.classes] == [2, 2, 1]
    assert better.labels == [2, 1, 0, 0, 1] and tied_for_first(vote(texts[:4], workers=0)) == []


def test_guarded_pool_takes_tasks_from_another_thread_while_busy():
    import threading

    with GuardedPool(_sleepy, workers=2, hard_timeout_s=1.5) as pool:
        feeder = threading.Thread(target=lambda: [pool.submit(x, (x,)) for x in ("a", "hang", "b", "a")])
        feeder.start()
        feeder.join()
        pool.submit("c", ("c",))
        assert pool.results() == {"a": "A", "hang": None, "b": "B", "c": "C"}  # "a" twice: run once


def test_guarded_pool_pauses_until_workers_are_let_in():
    with GuardedPool(_sleepy, workers=2, hard_timeout_s=5) as pool:
        pool.set_active(0)
        pool.submit("a", ("a",))
        time.sleep(0.5)
        assert pool._results == {}  # paused: nothing ran
        pool.set_active(1)
        assert pool.results() == {"a": "A"}


def _sleepy(x):
    if x == "hang":
        while True:  # not interruptible by anything but a kill
            pass
    if x == "die":
        import os

        os._exit(1)
    if x == "raise":
        raise RuntimeError(x)
    return x.upper()


def test_guarded_pool_survives_hangs_deaths_and_errors():
    start = time.monotonic()
    out = run_guarded(_sleepy, [("a",), ("hang",), ("b",), ("die",), ("raise",), ("c",)], workers=2, hard_timeout_s=1.5)
    assert out == ["A", None, "B", None, None, "C"]
    assert time.monotonic() - start < 20


def _hold_progress_lock_forever(_):
    from tqdm.auto import tqdm

    with tqdm.get_lock():
        time.sleep(60)


def test_a_worker_killed_inside_a_progress_bar_does_not_wedge_the_parent():
    from tqdm.auto import tqdm

    list(tqdm(range(2), disable=True))  # the parent's tqdm lock exists before the fork, as in a stage
    assert run_guarded(_hold_progress_lock_forever, [(0,)], workers=1, hard_timeout_s=1) == [None]
    for lock in tqdm.get_lock().locks:  # a multiprocessing lock (shared across fork) and a thread lock
        assert lock.acquire(timeout=5), "a killed worker left tqdm's lock held in the parent"
        lock.release()


def _adversarial(rng: random.Random) -> str:
    kind = rng.randrange(8)
    depth = rng.randint(5, 60)
    if kind == 0:
        return "\\boxed{" + "\\frac{1}{" * depth + "2" + "}" * depth + "}"
    if kind == 1:
        return "\\boxed{10^{10^{10^{" + str(rng.randint(2, 99)) + "}}}}"
    if kind == 2:
        return "\\boxed{" + "{" * depth + "x" + "}" * rng.randint(0, depth)
    if kind == 3:
        return ""
    if kind == 4:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))).decode("latin-1")
    if kind == 5:
        return "$" * depth + "\\left(" * depth + "1"
    if kind == 6:
        return "\\boxed{" + "+".join(f"x^{{{rng.randint(1, 10**6)}}}" for _ in range(depth)) + "}"
    return "\\boxed{" + "(" * depth + "1" + ")" * depth + "!" * rng.randint(1, 4) + "}"


@pytest.mark.slow
def test_thousand_hostile_outputs_never_crash():
    rng = random.Random(0)
    texts = [_adversarial(rng) for _ in range(1000)]
    ballots = [Ballot(texts[i : i + 10], [rng.uniform(-50, 0) for _ in range(10)]) for i in range(0, 1000, 10)]
    # per-answer timeout 1 s and a 2 s clustering budget per problem: about 40 s of CPU in all
    votes = vote_many(ballots, workers=2, timeout_s=1, cluster_timeout_s=2)
    assert len(votes) == 100
    for v, b in zip(votes, ballots):
        assert isinstance(v.output, str) and v.output.startswith("\\boxed{")
        assert len(v.labels) == len(b.texts)
        assert sum(c.size for c in v.classes) + v.n_unparseable == len(b.texts)


def test_vote_keeps_apart_what_the_grader_scores_differently():
    v = vote(["\\boxed{120^\\circ}", "\\boxed{120}", "\\boxed{120}", "\\boxed{120^\\circ}"], workers=0)
    assert [c.size for c in v.classes] == [2, 2] and v.labels == [0, 1, 1, 0]
