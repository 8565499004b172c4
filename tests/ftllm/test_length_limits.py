"""Both engines enforce max_model_len row by row: an over-long prompt gets an empty, reported output."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ftllm.config import EngineSpec, SamplingSpec
from ftllm.engine import make_engine
from ftllm.engine.base import PROMPT_TOO_LONG

LIMIT = 64
SHORT = [{"role": "user", "content": "1 + 1 = ?"}]
LONG = [{"role": "user", "content": "1 + 1 = ? " * 200}]  # hundreds of tokens, far under the character cap
HUGE = [{"role": "user", "content": "7" * 10_000_000}]  # 10 MB: over the cap, never tokenized


def check(engine, sampling):
    prompts = engine.render_chats([SHORT, LONG, SHORT, HUGE])
    assert len(prompts[1]) > LIMIT and len(prompts[3]) == LIMIT
    seen = []
    outs = engine.generate_ids(prompts, sampling, on_finished=lambda p, cs: seen.append(len(p)))
    assert len(outs) == 4 and sorted(seen) == sorted(len(p) for p in prompts)  # every row reported
    for i in (1, 3):
        assert [(c.text, c.num_tokens, c.finish_reason) for c in outs[i]] == [("", 0, PROMPT_TOO_LONG)] * sampling.n
    for i in (0, 2):
        assert len(outs[i]) == sampling.n
        assert all(c.finish_reason in ("stop", "length") and c.num_tokens >= 1 for c in outs[i])
        assert all(len(prompts[i]) + c.num_tokens <= LIMIT for c in outs[i])
    return prompts


@pytest.mark.slow
def test_hf_engine_enforces_max_model_len(tiny_model):
    engine = make_engine(EngineSpec(model=str(tiny_model), backend="hf", dtype="float32", max_model_len=LIMIT))
    sampling = SamplingSpec(n=2, temperature=1.0, max_new_tokens=LIMIT * 4, seed=0)
    prompts = check(engine, sampling)
    # a prompt one token short of the limit still gets its token, and no more
    near = prompts[1][: LIMIT - 1]
    (out,) = engine.generate_ids([near], sampling)
    assert all(c.num_tokens == 1 and c.finish_reason == "length" for c in out)


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_engine_enforces_max_model_len_without_failing_the_batch(tiny_model):
    pytest.importorskip("vllm")
    spec = EngineSpec(model=str(tiny_model), backend="vllm", dtype="float32", max_model_len=LIMIT, enforce_eager=True)
    with make_engine(spec) as engine:
        check(engine, SamplingSpec(n=2, temperature=1.0, max_new_tokens=LIMIT * 4, seed=0))


@pytest.mark.slow
def test_predict_with_a_10_mb_problem_stays_small_and_reports_the_row(tmp_path, tiny_model):
    problems = tmp_path / "problems.jsonl"
    rows = [{"id": "ok", "problem": "1+1"}, {"id": "huge", "problem": "9" * 10_000_000}]
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"predict": {
        "engine": {"model": str(tiny_model), "backend": "hf", "dtype": "float32", "max_model_len": 256},
        "sampling": {"n": 2, "temperature": 1.0, "max_new_tokens": 8, "seed": 0}, "parse_workers": 0,
    }}), encoding="utf-8")
    out, metrics = tmp_path / "pred", tmp_path / "m.json"
    root = Path(__file__).resolve().parents[2]
    # the stage reports its own peak resident memory as it exits: VmHWM, not ru_maxrss, which Linux carries over
    # exec from the forked parent (this test process, gigabytes after the in-process vLLM tests)
    wrapper = ("import atexit, runpy, sys\n"
               "hwm = lambda: [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
               "atexit.register(lambda: sys.stderr.write(f'MAXRSS {hwm()}\\n'))\n"
               "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", wrapper, str(root / "stages" / "predict.py"), "--params", str(params),
                          "--input", str(problems), "--out", str(out), "--metrics", str(metrics)],
                         capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(root / "src"),
                                                                           "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    peak_mb = int(run.stderr.rsplit("MAXRSS ", 1)[1].split()[0]) / 1024
    assert peak_mb < 2000, f"predict peaked at {peak_mb:.0f} MB"
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [p["id"] for p in preds] == ["ok", "huge"]
    assert isinstance(preds[1]["output"], str)
    assert "prompt 1 is at least 256 tokens, over max_model_len 256" in run.stderr
    assert json.loads(metrics.read_text())["prompts_too_long"] == 1
