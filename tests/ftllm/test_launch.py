"""Tests of ftllm.train.launch: process counts, worker detection, and a real 2-process CPU relaunch."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftllm.train import launch

ROOT = Path(__file__).resolve().parents[2]
CPU_CONFIG = ROOT / "conf" / "accelerate" / "cpu.yaml"


@pytest.fixture
def not_a_worker(monkeypatch):
    for var in ("LOCAL_RANK", "FTLLM_LAUNCHED", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)


def test_resolve_num_processes(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert launch.resolve_num_processes("auto") == 1  # no GPU: one process
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert launch.resolve_num_processes("auto") == 8
    assert launch.resolve_num_processes(3) == 3
    with pytest.raises(ValueError):
        launch.resolve_num_processes(0)


@pytest.mark.parametrize("bad", [0, -1, "four", 2.5, True])
def test_check_num_processes_rejects(bad):
    with pytest.raises(ValueError, match="num_processes"):
        launch.check_num_processes(bad)


def test_worker_detection(monkeypatch, not_a_worker):
    assert not launch.is_worker() and launch.world_size() == 1 and launch.is_main_process()
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert launch.is_worker() and launch.world_size() == 2 and not launch.is_main_process()


def test_launch_command_shape(tmp_path):
    command = launch.launch_command("stages/sft.py", ["--out", "x"], 4, CPU_CONFIG)
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "4"
    assert command[command.index("--config_file") + 1] == str(CPU_CONFIG)
    assert command[-3:] == ["stages/sft.py", "--out", "x"]
    with pytest.raises(FileNotFoundError, match="accelerate config"):
        launch.launch_command("s.py", [], 2, tmp_path / "missing.yaml")


def test_no_relaunch_for_one_process_or_inside_a_worker(monkeypatch, not_a_worker):
    assert launch.relaunch_if_needed(1, CPU_CONFIG, ["x.py"]) is None
    monkeypatch.setenv("FTLLM_LAUNCHED", "1")
    assert launch.relaunch_if_needed(2, CPU_CONFIG, ["x.py"]) is None


WORKER = """
import json, os, sys, time
sys.path.insert(0, {src!r})
from ftllm.train.launch import distributed_state, relaunch_if_needed
# A worker calling the launcher again must train itself, never start more workers.
assert relaunch_if_needed(2, {config!r}) is None
import torch
import torch.distributed as dist
state = distributed_state()  # as the training stages get their ranks: gloo over the launcher's variables
marker = os.path.join(sys.argv[1], "first.txt")
with state.main_process_first():  # the stages clear checkpoints and sample prompts here, rank 0 alone first
    if state.is_main_process:
        time.sleep(1)
        open(marker, "w").write("rank 0")
    saw_rank0_first = os.path.exists(marker)
t = torch.tensor([state.process_index + 1])
dist.all_reduce(t)
out = os.path.join(sys.argv[1], f"rank{{state.process_index}}.json")
result = {{"world": state.num_processes, "cpu": os.environ.get("ACCELERATE_USE_CPU"), "sum": int(t.item()),
          "type": str(state.distributed_type), "saw_rank0_first": saw_rank0_first}}
json.dump(result, open(out, "w"))
state.destroy_process_group()  # gloo threads left running abort the interpreter at exit
"""


@pytest.mark.slow
def test_relaunch_runs_two_cpu_workers(tmp_path, not_a_worker):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(src=str(ROOT / "src"), config=str(CPU_CONFIG)))
    code = launch.relaunch_if_needed(2, CPU_CONFIG, [str(script), str(tmp_path)])
    assert code == 0
    reports = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert all(r == {"world": 2, "cpu": "true", "sum": 3, "type": "DistributedType.MULTI_CPU", "saw_rank0_first": True}
               for r in reports)  # 1 + 2 summed over gloo; a bare PartialState() would see one lone process per rank


@pytest.mark.slow
def test_failing_workers_return_nonzero(tmp_path, not_a_worker):
    script = tmp_path / "fail.py"
    script.write_text("import sys; sys.exit(3)\n")
    assert launch.relaunch_if_needed(2, CPU_CONFIG, [str(script)]) != 0


FSDP2_CONFIG = ROOT / "conf" / "accelerate" / "fsdp2.yaml"


def test_fsdp_settings_are_written_over_an_fsdp_config_only():
    import yaml

    settings = launch.FsdpSettings(auto_wrap_policy="SIZE_BASED_WRAP", reshard_after_forward=False,
                                   activation_checkpointing=True)  # fmt: skip
    path = launch.fsdp_config_file(FSDP2_CONFIG, settings, offload=True)
    try:
        data = yaml.safe_load(path.read_text())
        fsdp = data["fsdp_config"]
        assert fsdp["fsdp_auto_wrap_policy"] == "SIZE_BASED_WRAP" and fsdp["fsdp_reshard_after_forward"] is False
        assert fsdp["fsdp_activation_checkpointing"] is True and fsdp["fsdp_offload_params"] is True
        assert fsdp["fsdp_version"] == 2 and data["mixed_precision"] == "bf16"  # the rest of the file is kept
    finally:
        path.unlink()
    assert launch.fsdp_config_file(CPU_CONFIG, settings, offload=False) is None  # not FSDP: left as it is
    with pytest.raises(ValueError, match="auto_wrap_policy"):
        launch.FsdpSettings(auto_wrap_policy="BY_LAYER")
    with pytest.raises(ValueError, match="cpu_offload_threshold"):
        launch.FsdpSettings(cpu_offload_threshold=0)


def test_cpu_offload_only_past_the_threshold(tiny_model):
    settings = launch.FsdpSettings()
    assert not launch.wants_cpu_offload(settings, tiny_model, 2, 80 * 2**30)  # a tiny model fits any card
    assert launch.wants_cpu_offload(settings, tiny_model, 2, 2**10)  # ... but not a 1 KiB one
    assert not launch.wants_cpu_offload(launch.FsdpSettings(cpu_offload_threshold=None), tiny_model, 2, 2**10)
    assert not launch.wants_cpu_offload(settings, tiny_model, 2, None)  # no GPU: nothing to size against


def test_relaunch_launches_with_the_params_fsdp_settings(monkeypatch, not_a_worker):
    import subprocess

    import yaml

    seen = {}

    def fake_run(command, check, env):
        path = Path(command[command.index("--config_file") + 1])
        seen["path"], seen["fsdp"] = path, yaml.safe_load(path.read_text())["fsdp_config"]
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(launch.subprocess, "run", fake_run)
    settings = launch.FsdpSettings(reshard_after_forward=False)
    assert launch.relaunch_if_needed(2, FSDP2_CONFIG, ["stages/sft.py"], fsdp=settings) == 0
    assert seen["path"] != FSDP2_CONFIG and seen["fsdp"]["fsdp_reshard_after_forward"] is False
    assert not seen["path"].exists()  # the temporary copy is removed after the workers finish


def test_several_nodes_from_the_environment(monkeypatch, not_a_worker):
    import subprocess

    assert launch.Nodes.from_env({}) == launch.Nodes()
    env = {"FTLLM_NUM_MACHINES": "2", "FTLLM_MACHINE_RANK": "1", "FTLLM_MAIN_PROCESS_IP": "10.0.0.1",
           "FTLLM_MAIN_PROCESS_PORT": "29500"}  # fmt: skip
    nodes = launch.Nodes.from_env(env)
    command = launch.launch_command("stages/sft.py", [], 8, CPU_CONFIG, nodes)
    value = {flag: command[command.index(flag) + 1] for flag in ("--num_processes", "--num_machines",
                                                                 "--machine_rank", "--main_process_ip",
                                                                 "--main_process_port")}  # fmt: skip
    assert value == {"--num_processes": "16", "--num_machines": "2", "--machine_rank": "1",
                     "--main_process_ip": "10.0.0.1", "--main_process_port": "29500"}  # 8 per node, 16 in all
    with pytest.raises(ValueError, match="FTLLM_MAIN_PROCESS_IP"):
        launch.Nodes.from_env({"FTLLM_NUM_MACHINES": "2", "FTLLM_MACHINE_RANK": "0"})
    with pytest.raises(ValueError, match="MACHINE_RANK"):
        launch.Nodes.from_env({**env, "FTLLM_MACHINE_RANK": "2"})

    # one GPU per node is still a distributed run: relaunched, not trained in place
    seen = []
    monkeypatch.setattr(launch.subprocess, "run", lambda command, check, env: seen.append(command)
                        or subprocess.CompletedProcess(command, 0))  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launch.relaunch_if_needed(1, CPU_CONFIG, ["stages/sft.py"]) == 0
    assert seen and seen[0][seen[0].index("--num_processes") + 1] == "2"


def test_gpu_memory_comes_from_nvml_without_a_cuda_context(monkeypatch):
    import sys
    import types

    assert launch.gpu_memory_bytes() is None or launch._has_cuda()  # no GPU here: nothing to size against
    calls = []
    fake = types.SimpleNamespace(
        nvmlInit=lambda: calls.append("init"), nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetHandleByIndex=lambda i: calls.append(("index", i)) or "h",
        nvmlDeviceGetHandleByUUID=lambda u: calls.append(("uuid", u)) or "h",
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=141 * 2**30),
    )  # fmt: skip
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(launch, "_has_cuda", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,4")
    assert launch.gpu_memory_bytes() == 141 * 2**30
    assert calls == ["init", ("index", 3), "shutdown"]  # the first GPU this process may use
