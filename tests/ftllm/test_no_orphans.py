"""Killing predict mid-generation (SIGKILL or SIGTERM) leaves no voter or pool worker behind."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of a live process; None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), fields[0], fields[19]


def descendants(root: int) -> dict[int, str]:
    """{pid: start time} of every live descendant of `root`."""
    children: dict[int, list[int]] = {}
    starts = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) and st[1] != "Z":
            children.setdefault(st[0], []).append(int(entry.name))
            starts[int(entry.name)] = st[2]
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


def survivors(procs: dict[int, str]) -> list[int]:
    return [pid for pid, start in procs.items() if (st := _stat(pid)) and st[1] != "Z" and st[2] == start]


def start_predict(tmp_path: Path, model: Path, workers: int = 2, backend: str = "hf") -> subprocess.Popen:
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"id": i, "problem": f"{i} + {i} = ?"}) + "\n" for i in range(64)))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"predict": {
        "engine": {"model": str(model), "backend": backend, "dtype": "float32", "max_model_len": 1024, "batch_size": 2,
                   "enforce_eager": True},
        "sampling": {"n": 4, "temperature": 1.0, "max_new_tokens": 512, "seed": 0}, "parse_workers": workers,
    }}))
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "stages" / "predict.py"), "--params", str(params),
                             "--input", str(problems), "--out", str(tmp_path / "out")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def wait_for_children(proc: subprocess.Popen, count: int, timeout: float = 120) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "predict ended before it could be killed"
        found = descendants(proc.pid)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"predict never had {count} descendants")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_predict_leaves_no_descendant(tmp_path, tiny_model, sig):
    proc = start_predict(tmp_path, tiny_model)
    try:
        wait_for_children(proc, 3)  # the voter and its two workers: generation is under way
        time.sleep(1.0)
        family = descendants(proc.pid)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while survivors(family) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert survivors(family) == [], f"orphans after {sig.name}: {survivors(family)}"
        assert not (tmp_path / "out").exists()  # and no half output
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
@pytest.mark.vllm
def test_killing_predict_on_vllm_leaves_no_descendant(tmp_path, tiny_model):
    """vLLM adds its engine-core process; it too must go when predict is killed."""
    pytest.importorskip("vllm")
    proc = start_predict(tmp_path, tiny_model, backend="vllm")
    try:
        wait_for_children(proc, 4, timeout=300)  # voter, two workers and vLLM's engine core
        time.sleep(2.0)
        family = descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while survivors(family) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:80] for pid in survivors(family)}
        assert left == {}, f"orphans after SIGKILL: {left}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
