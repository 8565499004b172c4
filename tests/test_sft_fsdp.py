"""benchmarks/sft_fsdp.py: its run plan and overrides, and a real run of two gloo processes through the stage's
launcher."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import sft_fsdp  # noqa: E402


def test_plan_and_overrides_keep_one_micro_batch_per_gpu():
    from ftllm.config import load_stage

    assert sft_fsdp.parse_args([]).runs.split(",") == list(sft_fsdp.RUNS)  # every comparison by default
    args = sft_fsdp.parse_args(["--gpus", "4", "--runs", "fsdp2,small_1,small_n"])
    section = load_stage(REPO / "params.yaml", "sft")
    runs = {r["name"]: r for r in sft_fsdp.plan(args, section)}
    assert set(runs) == {"fsdp2", "small_1", "small_n"}
    assert runs["fsdp2"]["processes"] == 4 and runs["small_1"]["processes"] == 1
    assert runs["fsdp2"]["accelerate_config"].endswith(section.accelerate_config)  # the stage's own launcher config
    assert args.shape["layers"] == 48 and args.shape["hidden"] == 4096
    big = sft_fsdp.run_config(args, section, 4, "big")
    small = sft_fsdp.run_config(args, section, 1, "small")
    assert big.global_batch_size == 4 * section.per_device_batch_size and big.max_steps == args.warmup + args.steps
    assert big.gradient_checkpointing == section.gradient_checkpointing  # the big model keeps the stage's rule
    assert small.gradient_checkpointing is False and small.num_processes == 1
    with pytest.raises(SystemExit):
        sft_fsdp.parse_args(["--runs", "fsdp3"])


@pytest.mark.slow
def test_two_gloo_processes_run_the_sft_stage_and_report(tmp_path):
    out = tmp_path / "sft_fsdp.json"
    command = [sys.executable, str(REPO / "benchmarks" / "sft_fsdp.py"), "--tiny", "--gpus", "2",
               "--workdir", str(tmp_path / "work"), "--out", str(out)]  # fmt: skip
    # two calls on one work folder: the second reuses the first's models and data and adds its run to the report
    for runs in ("fsdp2,zero3,small_1", "small_n"):
        proc = subprocess.run([*command, "--runs", runs], cwd=REPO, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "reusing the models and data" in proc.stdout
    result = json.loads(out.read_text())
    assert result["gpus"] == 2 and result["card"] and result["date"] and result["commit"]
    assert "sft_fsdp.py --tiny" in result["command"]
    runs = result["runs"]
    assert set(runs) == {"fsdp2", "zero3", "small_1", "small_n"} and "small_n" in runs["small_n"]["command"]
    for name in ("fsdp2", "small_n"):  # two ranks under accelerate launch, each measured
        assert runs[name]["distributed_type"].endswith("MULTI_CPU"), runs[name]
        assert runs[name]["gpus"] == 2 and len(runs[name]["peak_memory_gb_per_gpu"]) == 2
        assert runs[name]["settings"]["global_batch_size"] == 2
    assert runs["small_1"]["distributed_type"].endswith("NO")  # one process: the plain path, never relaunched
    assert 0 < result["mfu"] < 1 and result["tokens_per_s_per_gpu"] > 0
    expected = runs["small_n"]["tokens_per_s_per_gpu"] / runs["small_1"]["tokens_per_s"]
    assert result["scaling_efficiency"] == pytest.approx(expected, rel=1e-3)
    if importlib.util.find_spec("deepspeed") is None:
        assert "deepspeed" in runs["zero3"]["error"]


@pytest.mark.slow
def test_cpt_flag_runs_the_cpt_stage_on_two_processes(tmp_path):
    out = tmp_path / "cpt_fsdp.json"
    command = [sys.executable, str(REPO / "benchmarks" / "sft_fsdp.py"), "--tiny", "--stage", "cpt", "--gpus", "2",
               "--runs", "small_1,small_n", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["stage"] == "cpt" and result["scaling_efficiency"] > 0
    many = result["runs"]["small_n"]
    assert many["distributed_type"].endswith("MULTI_CPU") and many["settings"]["gradient_accumulation_steps"] == 1
    # a CPT step is one full block per process: the tokens timed are exactly blocks x processes x steps
    assert many["timed_tokens"] == many["settings"]["block_size"] * 2 * many["timed_steps"]
