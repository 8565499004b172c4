"""Where and when a measurement was taken: every benchmark result carries this block.

    result |= provenance()   # device, date (UTC), command, code (commit), load average
"""
from __future__ import annotations

import datetime
import os
import shlex
import subprocess
import sys
from pathlib import Path


def device_name() -> str:
    """The GPUs when there are any ("1x NVIDIA H100 80GB HBM3"), else the CPU model and core count."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")
    return f"CPU: {model}, {os.cpu_count()} cores"


def code_version() -> str | None:
    """The commit the code was run from, marked `+dirty` when the work tree had changes; None outside git."""
    if stamped := os.environ.get("FTLLM_CODE_VERSION"):  # a copy without its .git (a lent GPU box) says it here
        return stamped
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def provenance(argv: list[str] | None = None) -> dict:
    """device, date, command (the script as it was called), code, loadavg: for a result file."""
    args = sys.argv if argv is None else argv
    return {
        "device": device_name(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in ["python", *args]),
        "code": code_version(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
