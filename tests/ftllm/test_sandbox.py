"""The TIR sandbox runs normal code and contains hostile snippets."""
from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from ftllm.infer.sandbox import SandboxLimits, run_code

LIMITS = SandboxLimits(wall_timeout_s=4, cpu_time_s=2, memory_mb=512, max_output_chars=300)


def test_normal_snippet_prints_its_result():
    result = run_code("from fractions import Fraction\nx = Fraction(1, 3) + Fraction(1, 6)\nprint(x)\nx * 2", LIMITS)
    assert result.ok
    assert result.output.splitlines() == ["1/2", "1"]  # the trailing bare expression is shown like a notebook


def test_error_shows_the_last_line_of_the_traceback():
    result = run_code("print('before')\n1 / 0", LIMITS)
    assert not result.ok
    assert result.output.splitlines() == ["before", "ZeroDivisionError: division by zero"]


def test_can_use_its_own_folder():
    result = run_code("open('a.txt', 'w').write('hi')\nimport os\nprint(open('a.txt').read(), os.listdir('.'))", LIMITS)
    assert result.ok, result.stderr
    assert result.output.strip() == "hi ['a.txt']"


@pytest.mark.parametrize(
    "template",
    [
        "open({path!r}, 'w').write('x')",
        "import os\nfd = os.open({path!r}, os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'x')",
        "import pathlib\npathlib.Path({path!r}).write_text('x')",
        "import os\nos.chdir('/tmp')\nopen({name!r}, 'w').write('x')",
        "import os\nopen('a', 'w').write('x')\nos.rename('a', {path!r})",
        "import os\nos.symlink('/tmp', 'out')\nopen('out/{name}', 'w').write('x')",
    ],
)
def test_writes_outside_its_folder_are_refused(template):
    target = Path("/tmp") / f"ftllm-sandbox-escape-{uuid.uuid4().hex}"
    result = run_code(template.format(path=str(target), name=target.name), LIMITS)
    assert not result.ok
    assert "PermissionError" in result.output
    assert not target.exists()


def test_deleting_outside_its_folder_is_refused(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    result = run_code(f"import os\nos.remove({str(victim)!r})", LIMITS)
    assert "PermissionError" in result.output
    assert victim.read_text() == "precious"


def test_reading_outside_its_folder_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("token")
    result = run_code(f"print(open({str(secret)!r}).read())", LIMITS)
    assert "token" not in result.output
    assert "PermissionError" in result.output


def test_socket_cannot_reach_a_listening_server():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.sendall(b'leak')"
        result = run_code(code, LIMITS)
        assert not result.ok
        with pytest.raises(socket.timeout):
            server.accept()  # nobody connected
    finally:
        server.close()


@pytest.mark.parametrize(
    "code",
    [
        "import os\nwhile True:\n    os.fork()",
        "import subprocess\nwhile True:\n    subprocess.Popen(['sleep', '100'])",
        "import os\nos.system('sleep 100 &')",
        "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()",
    ],
)
def test_fork_bombs_are_contained(code):
    result = run_code(code, LIMITS)
    assert not result.ok
    assert "PermissionError" in result.output


def test_memory_bomb_gets_memory_error():
    result = run_code("x = bytearray(8 * 1024**3)", LIMITS)
    assert not result.ok
    assert "MemoryError" in result.output


def test_infinite_loop_is_stopped_within_the_timeout():
    result = run_code("while True:\n    pass", SandboxLimits(wall_timeout_s=1.5, cpu_time_s=1))
    assert not result.ok
    assert result.timed_out or result.returncode != 0  # killed by the wall clock or by RLIMIT_CPU


def test_sleeping_code_is_killed_by_the_wall_clock():
    result = run_code("import time\nprint('start', flush=True)\ntime.sleep(60)", SandboxLimits(wall_timeout_s=1))
    assert result.timed_out
    assert result.output.splitlines() == ["start", "TimeoutError: execution timed out"]


def test_output_flood_is_truncated():
    flood = SandboxLimits(wall_timeout_s=3, max_file_mb=1, max_output_chars=100)
    result = run_code("while True:\n    print('x' * 1000)", flood)
    assert len(result.stdout) < 200
    assert "truncated" in result.stdout


def test_limits_are_validated():
    with pytest.raises(ValueError, match="sandbox.memory_mb"):
        SandboxLimits(memory_mb=0)
