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
or an explicit count (CI uses 2 CPU processes with conf/accelerate/cpu.yaml).
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
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


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def free_port() -> int:
    """A free TCP port, so two stages (or two test runs) on one box never fight over 29500."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(script: str | Path, args: list[str], num_processes: int, config_file: str | Path) -> list[str]:
    """The `accelerate launch` command line that runs `script args` in `num_processes` workers."""
    config_file = Path(config_file)
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: accelerate config not found")
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(config_file),
        "--num_processes", str(num_processes),
        "--num_machines", "1",
        "--main_process_port", str(free_port()),
        str(script), *args,
    ]  # fmt: skip


def relaunch_if_needed(num_processes: int | str, config_file: str | Path, argv: list[str] | None = None) -> int | None:
    """Re-run this script under `accelerate launch` when several processes are wanted.

    Returns None when the caller should train in this process (one process wanted, or
    already a worker); otherwise the workers' exit code, after they finish.
    """
    count = resolve_num_processes(num_processes)
    if count == 1 or is_worker():
        return None
    argv = list(sys.argv if argv is None else argv)
    command = launch_command(argv[0], argv[1:], count, config_file)
    log.info("relaunching under accelerate with %d processes: %s", count, " ".join(command))
    env = {**os.environ, "FTLLM_LAUNCHED": "1"}
    if not _has_cuda():  # torchrun workers on a CPU box: accelerate needs this to pick MULTI_CPU (gloo)
        env["ACCELERATE_USE_CPU"] = "true"
    return subprocess.run(command, check=False, env=env).returncode
