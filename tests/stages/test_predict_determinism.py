"""predict is a function of its inputs and params: same bytes twice, same samples whatever the order or batch."""
import json
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from ftllm.config import EngineSpec, SamplingSpec
from ftllm.infer import PredictConfig
from ftllm.infer.strategies.base import request_seeds
from tests.stages.helpers import load_stage_main

main = load_stage_main("predict")

ROWS = [
    {"id": "q1", "problem": "$2+3$ を計算しなさい。"},
    {"id": "q2", "problem": "$\\{1,2\\}$ の要素の個数は？"},
    {"id": "q3", "problem": "$x+1=4$ を解きなさい。"},
]


def _run(tmp_path, name, tiny_model, rows, batch_size=4):
    folder = tmp_path / name
    folder.mkdir()
    section = {
        "engine": {"model": "overridden", "backend": "hf", "dtype": "float32", "max_model_len": 256,
                   "batch_size": batch_size},
        "sampling": {"n": 3, "temperature": 1.0, "max_new_tokens": 8, "seed": 7},
        "parse_workers": 1,
    }
    params = folder / "params.yaml"
    params.write_text(yaml.safe_dump({"predict": section}), encoding="utf-8")
    problems = folder / "problems.jsonl"
    problems.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = folder / "out"
    args = ["--params", str(params), "--model", str(tiny_model), "--input", str(problems), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out


def _by_id(out):
    samples = sorted(pq.read_table(out / "samples.parquet").to_pylist(), key=lambda s: (s["id"], s["sample"]))
    predictions = sorted((json.loads(line) for line in (out / "predictions.jsonl").read_text("utf-8").splitlines()),
                         key=lambda p: p["id"])
    return samples, predictions


@pytest.mark.slow
def test_predict_twice_gives_the_same_bytes_and_order_cannot_change_a_sample(tmp_path, tiny_model):
    first = _run(tmp_path, "first", tiny_model, ROWS)
    second = _run(tmp_path, "second", tiny_model, ROWS)
    for name in ("predictions.jsonl", "samples.parquet"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    # another batch size and the problems in reverse order (q3 first, alone in its batch)
    shuffled = _run(tmp_path, "shuffled", tiny_model, ROWS[::-1], batch_size=1)
    assert _by_id(shuffled) == _by_id(first)
    texts = [s["text"] for s in _by_id(first)[0]]
    assert len(set(texts)) > 1  # sampled, not greedy: the seeds are what keeps the runs equal


def test_request_seeds_depend_on_seed_and_id_only():
    config = PredictConfig(engine=EngineSpec(model="m", seed=3), sampling=SamplingSpec(seed=None))
    rows = [{"id": "a"}, {"id": "b"}]
    assert request_seeds(config, rows) == request_seeds(config, rows[::-1])[::-1]
    assert request_seeds(config, rows[:1]) == request_seeds(config, rows)[:1]
    assert len(set(request_seeds(config, rows))) == 2
    seeded = PredictConfig(engine=EngineSpec(model="m", seed=3), sampling=SamplingSpec(seed=4))
    assert request_seeds(seeded, rows) != request_seeds(config, rows)
    assert request_seeds(config, rows, 1) != request_seeds(config, rows)  # e.g. a later round


VLLM_SCRIPT = textwrap.dedent("""
    import json, sys
    from ftllm.config import EngineSpec, SamplingSpec
    from ftllm.engine import make_engine
    from ftllm.infer import PredictConfig
    from ftllm.infer.predict import run_sc

    rows = json.loads(sys.argv[2])
    config = PredictConfig(engine=EngineSpec(model=sys.argv[1], backend="vllm", dtype="float32", max_model_len=256,
                                             enforce_eager=True),
                           sampling=SamplingSpec(n=3, temperature=1.0, max_new_tokens=8, seed=7), parse_workers=0)
    runs = []
    with make_engine(config.engine) as engine:
        for order in (rows, rows, rows[::-1], rows[1:2]):
            results = run_sc(engine, order, config)
            runs.append({r["id"]: [[c.text for c in res.samples], res.output] for r, res in zip(order, results)})
    print(json.dumps(runs))
""")


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_samples_do_not_depend_on_the_batch(tiny_model):
    pytest.importorskip("vllm")
    proc = subprocess.run([sys.executable, "-c", VLLM_SCRIPT, str(tiny_model), json.dumps(ROWS)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert runs[0] == runs[1] == runs[2]
    assert runs[3]["q2"] == runs[0]["q2"]  # alone in its batch
    assert len({t for texts, _ in runs[0].values() for t in texts}) > 1
