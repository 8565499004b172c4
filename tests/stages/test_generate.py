"""stages/generate.py end to end on the tiny model: hf backend, SIGKILL + resume, one vLLM run."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ftllm.config import build
from ftllm.generate import GenerateConfig
from ftllm.generate.run import plan_items
from ftllm.io import read_records

ROOT = Path(__file__).resolve().parents[2]
STAGE = ROOT / "stages" / "generate.py"


def load_stage_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("stage_generate", STAGE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def section(model, backend="hf", **over) -> dict:
    """A small grid with a short prompt: the tiny tokenizer spends ~3 tokens per Japanese character."""
    values = {
        "teacher": {"model": str(model), "backend": backend, "dtype": "float32", "batch_size": 8, "max_model_len": 512},
        "sampling": {"temperature": 1.0, "max_new_tokens": 12, "skip_special_tokens": False},
        "fields": {"中1": ["一次方程式"], "IIB": ["数列"]},
        "difficulties": [1, 6],
        "tool_use": [False, True],
        "samples_per_cell": 2,
        "shard_size": 4,
        "seed": 5,
        "system_template": "",
        "user_template": "{{ category }} {{ unit }} {{ difficulty }}",
        "response_prefix": "<problem>",
    }
    values.update(over)
    return values


def write_params(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump({"generate": values, "other": {"x": 1}}, allow_unicode=True, sort_keys=False),
                    encoding="utf-8")
    return path


def all_rows(out: Path) -> list[dict]:
    return read_records(out, allow_empty=True) + read_records(out / "rejects", allow_empty=True)


def expected_ids(values: dict) -> set[str]:
    return {item.id for shard in plan_items(build(GenerateConfig, values, "generate")) for item in shard}


def test_help_names_the_section():
    result = CliRunner().invoke(load_stage_main(), ["--help"])
    assert result.exit_code == 0 and "`generate` section" in result.output and "--shard" in result.output


def test_bad_params_fail_with_one_line(tmp_path, tiny_model):
    main = load_stage_main()
    params = write_params(tmp_path / "params.yaml", section(tiny_model, samples_per_cel=3))
    result = CliRunner().invoke(main, ["--params", str(params), "--out", str(tmp_path / "raw")])
    assert result.exit_code != 0 and "generate.samples_per_cel" in result.output
    result = CliRunner().invoke(main, ["--params", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "raw")])
    assert result.exit_code != 0 and "params file not found" in result.output
    result = CliRunner().invoke(main, ["--params", str(params), "--out", str(tmp_path / "raw"), "--shard", "3/2"])
    assert result.exit_code != 0 and "--shard" in result.output


@pytest.mark.slow
def test_stage_hf_end_to_end(tmp_path, tiny_model):
    values = section(tiny_model)
    params = write_params(tmp_path / "params.yaml", values)
    out, metrics_path = tmp_path / "raw", tmp_path / "metrics" / "generate.json"
    args = ["--params", str(params), "--out", str(out), "--metrics", str(metrics_path)]
    result = CliRunner().invoke(load_stage_main(), args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("shard-*.parquet")) == [f"shard-0000{k}.parquet" for k in range(4)]
    rows = all_rows(out)
    assert {r["id"] for r in rows} == expected_ids(values) and len(rows) == 16
    assert all(r["raw_text"].startswith("<problem>") and r["cell"] and 1 <= r["num_tokens"] <= 12 for r in rows)
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    assert metrics["samples"] == 16 and metrics["kept"] + metrics["rejected"] == 16
    assert sum(v for k, v in metrics.items() if k.startswith("reject.")) == metrics["rejected"]
    assert metrics["cell.中1/一次方程式/d06/tool.kept"] + metrics["cell.中1/一次方程式/d06/tool.rejected"] == 2
    # a rerun finds every shard complete and samples nothing
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    assert CliRunner().invoke(load_stage_main(), args).exit_code == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")} == before


def _run_stage(params: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, str(STAGE), "--params", str(params), "--out", str(out),
           "--metrics", str(out.parent / "m.json")]
    # its own session: a kill takes the whole process group, so nothing outlives the test
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _kill_after(params: Path, out: Path, shards_done: int, extra_s: float) -> None:
    """Start the stage, SIGKILL it once `shards_done` shard files exist plus a random delay (mid-shard, mid-write).

    A fresh interpreter each time, not a fork of this one: a forked child shares tqdm's
    multiprocessing lock with pytest, and a SIGKILL while it holds that lock wedges every later
    progress bar in this process (every in-process stage test after this one would hang).
    """
    proc = _run_stage(params, out)
    try:
        deadline = time.monotonic() + 300
        while len(list(out.glob("shard-*.parquet"))) < shards_done and proc.poll() is None:
            assert time.monotonic() < deadline, "stage made no progress"
            time.sleep(0.01)
        time.sleep(extra_s)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


@pytest.mark.slow
def test_sigkill_and_rerun_gives_the_uninterrupted_rows(tmp_path, tiny_model):
    from ftllm.generate import generate_shards

    values = section(tiny_model, fields={"中1": ["一次方程式", "比例と反比例"], "IIB": ["数列"]}, shard_size=2)
    config = build(GenerateConfig, values, "generate")
    generate_shards(config, tmp_path / "whole")  # the uninterrupted reference, in-process
    reference = {r["id"]: r["raw_text"] for r in all_rows(tmp_path / "whole")}
    assert len(reference) == 24
    # one shard's time on this machine, from the reference's file times: kill delays scale with it,
    # so a fast machine cannot finish all 12 shards before the last kill lands
    stamps = sorted(p.stat().st_mtime for p in (tmp_path / "whole").glob("shard-*.parquet"))
    shard_s = max((stamps[-1] - stamps[0]) / (len(stamps) - 1), 0.005)

    params = write_params(tmp_path / "params.yaml", values)
    out = tmp_path / "killed" / "raw"
    rng = random.Random()
    # at most 8 shards done, then up to 1.5 shards more: the last kill leaves 2+ shards to do
    points = sorted(rng.sample(range(0, 9), 3))
    delays = [rng.uniform(0, 1.5 * shard_s) for _ in points]
    for done, delay in zip(points, delays):
        _kill_after(params, out, done, delay)
    kills = list(zip(points, [round(d, 3) for d in delays]))
    where = f"kill points (shards done, delay s): {kills}; one shard takes {shard_s:.3f} s"
    assert len(list(out.glob("shard-*.parquet"))) < 12, f"the stage finished before the last kill; {where}"
    final = _run_stage(params, out)
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err.decode()[-2000:]
    rows = all_rows(out)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), f"duplicates; {where}"
    assert {r["id"]: r["raw_text"] for r in rows} == reference, where
    assert not list(out.glob("*.parquet.tmp")) and not list((out / "rejects").glob("*.tmp"))


@pytest.mark.slow
@pytest.mark.vllm
def test_stage_vllm_backend(tmp_path, tiny_model):
    values = section(tiny_model, backend="vllm", shard_size=8, response_prefix="")  # the engine.chat path
    params = write_params(tmp_path / "params.yaml", values)
    out = tmp_path / "raw"
    proc = _run_stage(params, out)  # a subprocess: vLLM wants its own process (and a __main__ guard)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    rows = all_rows(out)
    assert {r["id"] for r in rows} == expected_ids(values)
    assert all(1 <= r["num_tokens"] <= 12 and "cumulative_logprob" in r for r in rows)
    metrics = json.loads((out.parent / "m.json").read_text(encoding="utf-8"))
    assert metrics["samples"] == 16 and metrics["shards_done"] == 2
