import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftllm.io import InputError, atomic_path, output_lock, read_jsonl, read_records, write_jsonl, write_parquet


def test_roundtrip_jsonl_and_parquet(tmp_path):
    rows = [{"id": "a", "x": 1, "tags": ["p", "q"]}, {"id": "b", "x": 2, "tags": []}]
    write_jsonl(tmp_path / "r.jsonl", rows)
    assert read_jsonl(tmp_path / "r.jsonl") == rows
    write_parquet(tmp_path / "r.parquet", rows)
    back = read_records(tmp_path / "r.parquet")
    assert [r["id"] for r in back] == ["a", "b"] and json.loads(back[0]["tags"]) == ["p", "q"]


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1}\n{"id": 2\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:2: malformed JSON"):
        read_jsonl(path)


def test_missing_field_names_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 1, "problem": "x"}\n{"id": 2}\n')
    with pytest.raises(InputError, match=r"p\.jsonl:2: missing required field\(s\) problem"):
        read_jsonl(path, required=["id", "problem"])


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_jsonl(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="file is empty"):
        read_jsonl(tmp_path / "empty.jsonl")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    write_jsonl(target, [{"a": 1}])
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert read_jsonl(target) == [{"a": 1}], "old content must survive a failed write"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temporary, no lock file


def test_atomic_path_replaces_folders(tmp_path):
    target = tmp_path / "ckpt"
    for content in ("first", "second"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "w").write_text(content)
    assert (target / "w").read_text() == "second"


# A writer that fills a folder of `files` files slowly, the way a stage writes its --out.
WRITER = """
import sys, time
from pathlib import Path
from ftllm.io import atomic_path, InputError
out, tag, files, pause = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
try:
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for i in range(files):
            (tmp / f"part-{i}").write_text(tag)
            Path(sys.argv[1] + ".started").touch()
            time.sleep(pause)
except InputError as err:
    sys.exit(f"error: {err}")
"""


def start_writer(out: Path, tag: str, files: int = 5, pause: float = 0.2) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(out), tag, str(files), str(pause)], env=env,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_second_writer_of_one_output_fails_at_once_and_the_first_finishes(tmp_path):
    out = tmp_path / "out"
    first = start_writer(out, "first")
    wait_for(tmp_path / "out.started")
    second = start_writer(out, "second", files=1, pause=0)
    _, err = second.communicate(timeout=30)
    assert second.returncode != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and str(out) in lines[0] and "another process is writing" in lines[0]
    first.wait(timeout=30)
    assert first.returncode == 0
    assert sorted(p.read_text() for p in out.iterdir()) == ["first"] * 5  # whole, and all one writer's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.started"]


def test_a_killed_writer_leaves_no_half_output_and_releases_the_lock(tmp_path):
    out = tmp_path / "out"
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "part-0").write_text("old")
    writer = start_writer(out, "killed", files=50)
    wait_for(tmp_path / "out.started")
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert [p.read_text() for p in out.iterdir()] == ["old"]  # the old output, untouched
    rerun = start_writer(out, "rerun", files=2, pause=0)  # the lock died with the writer
    assert rerun.wait(timeout=30) == 0
    assert sorted(p.read_text() for p in out.iterdir()) == ["rerun"] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.started"]  # the stale temporary is gone


def test_output_lock_is_reentrant_in_one_process_and_exclusive_across(tmp_path):
    out = tmp_path / "o.jsonl"
    with output_lock(out):
        write_jsonl(out, [{"a": 1}])  # the stage holds the lock and writes through it
        code = f"from ftllm.io import output_lock\nwith output_lock({str(out)!r}):\n    pass"
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
        other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert other.returncode != 0 and "OutputBusy" in other.stderr
    assert read_jsonl(out) == [{"a": 1}]
    with output_lock(out):  # free again after release
        pass
