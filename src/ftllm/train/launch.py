"""Run a training stage on every GPU of the box by re-executing it under `accelerate launch`.

A training stage (cpt, sft, rl) is an ordinary Click script; the stage harness
(`ftllm.cli.run_stage(..., relaunch=True)`) calls, before any work,

    relaunch_if_needed(config.num_processes, config.accelerate_config, [script, *argv from Click's parameters])

When more than one process is wanted and this process is not already a worker, the
same command line is run again under `accelerate launch --num_processes N
--config_file <yaml>` and the parent only waits for it; the workers see the
variables accelerate sets (LOCAL_RANK, WORLD_SIZE) and go on to train. With one
process nothing is relaunched, so the single-GPU/CPU path is the plain script.

`num_processes` comes from params: `auto` means every visible GPU (1 without GPUs),
or an explicit count (CI uses 2 CPU processes with conf/accelerate/cpu.yaml), per node. On several
nodes the same stage command runs on each, with FTLLM_NUM_MACHINES, FTLLM_MACHINE_RANK,
FTLLM_MAIN_PROCESS_IP and FTLLM_MAIN_PROCESS_PORT set (`Nodes`); the relaunch passes them to accelerate.

With an FSDP accelerate config, the stage's `fsdp` params (`FsdpSettings`: wrapping policy,
reshard-after-forward, activation checkpointing, CPU-offload threshold) are written over the
file's `fsdp_config` into a temporary copy that the launch uses, so params, not the YAML, decide.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# Variables launchers (torchrun, deepspeed, ours) set in their workers. FTLLM_LAUNCHED is ours:
# it is inherited by every worker whatever launcher accelerate picks, so a worker never relaunches.
_WORKER_VARS = ("LOCAL_RANK", "FTLLM_LAUNCHED")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_num_processes(value: int | str) -> int:
    """`auto` -> number of visible GPUs (1 on a CPU box); an int (or digit string) is taken as is."""
    if isinstance(value, str) and value == "auto":
        import torch

        return max(torch.cuda.device_count(), 1) if _has_cuda() else 1
    count = int(value)
    if count < 1:
        raise ValueError(f"num_processes must be auto or >= 1, got {value!r}")
    return count


def check_num_processes(value) -> None:
    """Validation for config `__post_init__`: `auto` or a positive int."""
    if value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"num_processes must be 'auto' or a positive integer, got {value!r}")


def is_worker() -> bool:
    """True inside a process started by a distributed launcher."""
    return any(var in os.environ for var in _WORKER_VARS)


def world_size() -> int:
    """Number of training processes this process belongs to (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def distributed_state():
    """accelerate's PartialState for this worker. On a CPU box our launcher marks the workers with
    ACCELERATE_USE_CPU (gloo); a bare PartialState() ignores that flag and tells every rank it is alone,
    so `main_process_first` would let all ranks clear checkpoints and write the same files at once."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def leave_process_group() -> None:
    """Destroy the process group before the worker exits: gloo threads still alive at interpreter exit
    abort the process ("terminate called without an active exception"), failing a run that succeeded."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def free_port() -> int:
    """A free TCP port, so two stages (or two test runs) on one box never fight over 29500."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


WRAP_POLICIES = ("TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP")


@dataclasses.dataclass(frozen=True)
class FsdpSettings:
    """How FSDP shards a training stage (the stage's `fsdp` params); applied only with an FSDP accelerate config."""

    # one FSDP unit per decoder layer: a layer's weights are gathered just before it runs and freed after, so
    # at most ~2 layers are whole at once; size-based units would cut across layers and gather more at a time
    auto_wrap_policy: str = "TRANSFORMER_BASED_WRAP"
    # free a layer's gathered weights after its forward (ZeRO-3 memory) and gather again in backward. false
    # saves one all-gather per layer per step but keeps every layer whole until backward: the 48-layer model
    # would hold all its weights on every GPU, which is what sharding is for
    reshard_after_forward: bool = True
    # FSDP's own recomputation wrapper; off because the trainer's gradient_checkpointing (auto: on when the
    # memory estimate needs it) already recomputes, and both would recompute twice
    activation_checkpointing: bool = False
    # offload parameters, gradients and optimizer state to CPU RAM when this GPU's share of them would exceed
    # this fraction of its usable memory (ftllm.train.trainer's estimate). Offloading makes a step several times
    # slower (PCIe instead of HBM), so 1.0 = only when the run would not fit otherwise; null = never
    cpu_offload_threshold: float | None = 1.0

    def __post_init__(self) -> None:
        if self.auto_wrap_policy not in WRAP_POLICIES:
            raise ValueError(f"fsdp.auto_wrap_policy must be one of {', '.join(WRAP_POLICIES)}, "
                             f"got {self.auto_wrap_policy!r}")  # fmt: skip
        if self.cpu_offload_threshold is not None and self.cpu_offload_threshold <= 0:
            raise ValueError(f"fsdp.cpu_offload_threshold must be > 0 or null, got {self.cpu_offload_threshold}")


def wants_cpu_offload(settings: FsdpSettings, model_dir: str | Path | None, processes: int,
                      memory_bytes: int | None) -> bool:  # fmt: skip
    """Whether this GPU's share of weights, gradients and optimizer state passes the offload threshold."""
    if settings.cpu_offload_threshold is None or model_dir is None or not memory_bytes:
        return False
    from transformers import AutoConfig

    from ftllm.train.trainer import MEMORY_HEADROOM, TRAINED_PARAM_BYTES, _parameter_count

    states = TRAINED_PARAM_BYTES * _parameter_count(AutoConfig.from_pretrained(str(model_dir))) / max(1, processes)
    return states > settings.cpu_offload_threshold * MEMORY_HEADROOM * memory_bytes


def gpu_memory_bytes() -> int | None:
    """Memory of the first GPU, read through NVML when it can be: this process only launches the workers and
    should not hold a CUDA context (~0.5 GB of GPU 0) while they train."""
    if not _has_cuda():
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
            handle = (pynvml.nvmlDeviceGetHandleByIndex(int(visible)) if visible.isdigit()
                      else pynvml.nvmlDeviceGetHandleByUUID(visible))  # fmt: skip
            return int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML (or a MIG/odd id): ask CUDA instead
        from ftllm.train.trainer import device_memory_bytes

        return device_memory_bytes()


def fsdp_config_file(config_file: str | Path, settings: FsdpSettings, offload: bool) -> Path | None:
    """A temporary copy of an FSDP accelerate config with `settings` applied; None for other launchers."""
    import yaml

    data = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
    if data.get("distributed_type") != "FSDP":
        return None
    fsdp = dict(data.get("fsdp_config") or {})
    fsdp.update(fsdp_auto_wrap_policy=settings.auto_wrap_policy,
                fsdp_reshard_after_forward=settings.reshard_after_forward,
                fsdp_activation_checkpointing=settings.activation_checkpointing,
                fsdp_offload_params=offload)
    data["fsdp_config"] = fsdp
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="accelerate-fsdp-", delete=False) as out:
        yaml.safe_dump(data, out, sort_keys=False)
    return Path(out.name)


@dataclasses.dataclass(frozen=True)
class Nodes:
    """Where this box sits in a several-node run (one of `machines`); from the environment, not params,
    because the rank differs per node: FTLLM_NUM_MACHINES, FTLLM_MACHINE_RANK, FTLLM_MAIN_PROCESS_IP,
    FTLLM_MAIN_PROCESS_PORT (the rank-0 node's address, reachable from every node)."""

    machines: int = 1
    rank: int = 0
    main_ip: str | None = None
    main_port: int | None = None

    @classmethod
    def from_env(cls, env=None) -> Nodes:
        env = os.environ if env is None else env
        machines = int(env.get("FTLLM_NUM_MACHINES", "1"))
        if machines == 1:
            return cls()
        rank, ip = env.get("FTLLM_MACHINE_RANK"), env.get("FTLLM_MAIN_PROCESS_IP")
        port = env.get("FTLLM_MAIN_PROCESS_PORT")
        if rank is None or not ip or not port:
            raise ValueError("FTLLM_NUM_MACHINES > 1 needs FTLLM_MACHINE_RANK, FTLLM_MAIN_PROCESS_IP and "
                             "FTLLM_MAIN_PROCESS_PORT (the same ip and port on every node)")  # fmt: skip
        if machines < 1 or not 0 <= int(rank) < machines:
            raise ValueError(f"FTLLM_MACHINE_RANK must be in [0, {machines}), got {rank}")
        return cls(machines, int(rank), ip, int(port))


def launch_command(script: str | Path, args: list[str], num_processes: int, config_file: str | Path,
                   nodes: Nodes = Nodes()) -> list[str]:  # fmt: skip
    """The `accelerate launch` command line that runs `script args` in `num_processes` workers per node."""
    config_file = Path(config_file)
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: accelerate config not found")
    where = ["--main_process_port", str(free_port())]  # one box: any free port, so two runs never collide
    if nodes.machines > 1:
        where = ["--machine_rank", str(nodes.rank), "--main_process_ip", nodes.main_ip,
                 "--main_process_port", str(nodes.main_port)]  # fmt: skip
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(config_file),
        "--num_processes", str(num_processes * nodes.machines),  # accelerate counts processes over all nodes
        "--num_machines", str(nodes.machines),
        *where,
        str(script), *args,
    ]  # fmt: skip


def relaunch_if_needed(num_processes: int | str, config_file: str | Path, argv: list[str] | None = None,
                       fsdp: FsdpSettings | None = None, model_dir: str | Path | None = None) -> int | None:
    """Re-run this script under `accelerate launch` when several processes are wanted.

    Returns None when the caller should train in this process (one process wanted, or
    already a worker); otherwise the workers' exit code, after they finish. `fsdp` (with the
    model being trained, for the offload threshold) overrides an FSDP config's sharding settings.
    """
    count = resolve_num_processes(num_processes)
    nodes = Nodes.from_env()
    if (count == 1 and nodes.machines == 1) or is_worker():
        return None
    argv = list(sys.argv if argv is None else argv)
    derived = None
    if fsdp is not None and Path(config_file).is_file():
        offload = wants_cpu_offload(fsdp, model_dir, count * nodes.machines, gpu_memory_bytes())
        derived = fsdp_config_file(config_file, fsdp, offload)
        if derived is not None:
            log.info("FSDP: %s, reshard_after_forward %s, activation_checkpointing %s, cpu offload %s",
                     fsdp.auto_wrap_policy, fsdp.reshard_after_forward, fsdp.activation_checkpointing, offload)
    command = launch_command(argv[0], argv[1:], count, derived or config_file, nodes)
    log.info("relaunching under accelerate with %d processes: %s", count, " ".join(command))
    env = {**os.environ, "FTLLM_LAUNCHED": "1"}
    if not _has_cuda():  # torchrun workers on a CPU box: accelerate needs this to pick MULTI_CPU (gloo)
        env["ACCELERATE_USE_CPU"] = "true"
    try:
        return subprocess.run(command, check=False, env=env).returncode
    finally:
        if derived is not None:
            derived.unlink(missing_ok=True)
