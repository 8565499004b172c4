"""The TIR sandbox runs normal code and contains hostile snippets through namespaces alone.

Most hostile snippets run with the audit hook off (`audit_hook=False`): what holds them is
bubblewrap's namespaces and the rlimits, not Python. A snippet prints ESCAPED when its attack
worked; the host side is checked too (files, processes, the parent's environment).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import ftllm
from ftllm.infer import sandbox
from ftllm.infer.sandbox import SandboxLimits, SandboxUnavailable, run_code, sandbox_status

WHY = sandbox_status()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"no namespaces on this machine: {WHY}")

LIMITS = SandboxLimits(wall_timeout_s=6, cpu_time_s=3, memory_mb=512, max_output_chars=2000)
BARE = SandboxLimits(wall_timeout_s=6, cpu_time_s=3, memory_mb=512, max_output_chars=2000, audit_hook=False,
                     packages=())


# The first escape of issue 18: the audit hook lives in the runner's module, which the snippet reaches
# through sys.modules['__main__']; this disarms that hook (and the one of this sandbox, via its
# default argument), so what still holds afterwards is the namespaces alone.
DISARM_HOOK = (
    "import sys\n"
    "_g = sys.modules['__main__'].__dict__\n"
    "_g.update(DENIED=(), PATH_WRITES=(), read_files=set(), inside=lambda *a: True)\n"
    "if callable(_g.get('hook')) and _g['hook'].__defaults__:\n"
    "    _g['hook'].__defaults__ = (frozenset(),)\n"
)


def attempt(body: str) -> str:
    """A snippet that prints ESCAPED when `body` runs without raising."""
    indented = "\n".join("    " + line for line in body.splitlines())
    return (f"try:\n{indented}\n    print('ESCAPED')\n"
            "except BaseException as e:\n    print('blocked:', type(e).__name__, e)")


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.fixture
def bystander():
    """A host process the snippets try to signal, trace and read; it must come out untouched."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                            env={"AWS_SECRET_ACCESS_KEY": "bystander-secret-" + uuid.uuid4().hex})
    yield proc
    proc.kill()
    proc.wait()


def test_normal_snippet_prints_its_result():
    result = run_code("from fractions import Fraction\nx = Fraction(1, 3) + Fraction(1, 6)\nprint(x)\nx * 2", LIMITS)
    assert result.ok, result.stderr
    assert result.output.splitlines() == ["1/2", "1"]  # the trailing bare expression is shown like a notebook


def test_sympy_is_importable():
    result = run_code("import sympy\nprint(sympy.factor('x**2 - 1'))", SandboxLimits(wall_timeout_s=20))
    assert result.ok, result.stderr
    assert result.output.strip() == "(x - 1)*(x + 1)"


def test_error_shows_the_last_line_of_the_traceback():
    result = run_code("print('before')\n1 / 0", LIMITS)
    assert not result.ok
    assert result.output.splitlines() == ["before", "ZeroDivisionError: division by zero"]


def test_can_use_its_own_folder_and_it_starts_empty():
    code = "import os\nprint(os.getcwd(), os.listdir('.'))\nopen('a.txt', 'w').write('hi')\nprint(open('a.txt').read())"
    first = run_code(code, LIMITS)
    assert first.ok, first.stderr
    assert first.output.splitlines() == ["/work []", "hi"]
    assert run_code(code, LIMITS).output == first.output  # nothing carried over from the previous run


def test_escape_by_rewriting_the_hooks_globals(tmp_path):
    """The first escape of issue 18: rewrite the audit hook's globals through sys.modules['__main__']."""
    target = Path("/tmp") / f"ftllm-escape-{uuid.uuid4().hex}"
    code = (
        DISARM_HOOK + "import os\n"
        + attempt("print(open('/etc/passwd').read())") + "\n"
        + f"open({str(target)!r}, 'w').write('x')  # lands in the sandbox's private /tmp\n"
        + attempt("assert os.system('id') == 0") + "\n"
        + attempt("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)")
    )
    result = run_code(code, LIMITS)
    assert "ESCAPED" not in result.output, result.output
    assert "root:" not in result.output
    assert not target.exists()


def test_escape_through_fchdir_and_dir_fd(tmp_path):
    """The second escape of issue 18: relative opens against a descriptor of another folder (dir_fd,
    fchdir) were checked against the working folder. Targets: a host folder, and site-packages, which
    the old audit hook let the snippet open because imports need it."""
    import sympy

    (tmp_path / "secret.txt").write_text("top-secret")
    planted = f"ftllm-planted-{uuid.uuid4().hex}"
    targets = [tmp_path, Path(sympy.__file__).parents[1]]
    code = "import os\n" + "\n".join(
        attempt(f"fd = os.open({str(folder)!r}, os.O_RDONLY)\n"
                f"w = os.open({planted!r}, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)\nos.write(w, b'x')")
        + "\n"
        + attempt(f"fd = os.open({str(folder)!r}, os.O_RDONLY)\nos.fchdir(fd)\n"
                  "print(os.read(os.open('secret.txt', os.O_RDONLY, dir_fd=fd), 100))")
        for folder in targets
    )
    try:
        for limits in (LIMITS, BARE):
            result = run_code(code, limits)
            assert "ESCAPED" not in result.output and "top-secret" not in result.output, result.output
            assert result.output.count("blocked") == 4, result.output
        assert [folder for folder in targets if (folder / planted).exists()] == []
    finally:
        for folder in targets:
            (folder / planted).unlink(missing_ok=True)


def test_parent_environment_is_not_readable(monkeypatch):
    secret = "fake-aws-secret-" + uuid.uuid4().hex
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    code = (
        DISARM_HOOK + "import os\n"
        "print(dict(os.environ))\n"
        "for pid in [os.getppid(), 1, " + str(os.getpid()) + "] + [p for p in os.listdir('/proc') if p.isdigit()]:\n"
        "    try:\n"
        "        print(pid, open(f'/proc/{pid}/environ', 'rb').read())\n"
        "    except OSError as e:\n"
        "        print(pid, 'blocked', e)\n"
    )
    result = run_code(code, LIMITS)
    assert result.ok, result.stderr
    assert secret not in result.output
    assert "AWS_SECRET_ACCESS_KEY" not in result.output


@pytest.mark.parametrize("hang", [False, True])
def test_setsid_grandchild_dies_with_the_snippet(hang):
    marker = "ftllm-grandchild-" + uuid.uuid4().hex
    code = (
        DISARM_HOOK + "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}])\n"
        "    os._exit(0)\n"
        "time.sleep(0.5)\n"
        "print('spawned', flush=True)\n"
        + ("time.sleep(60)\n" if hang else "")
    )
    result = run_code(code, SandboxLimits(wall_timeout_s=3))
    assert result.output.startswith("spawned")
    assert result.timed_out == hang
    deadline = time.monotonic() + 2
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []


HOSTILE = {
    "read /etc/passwd": attempt("print(open('/etc/passwd').read())"),
    "read /etc/shadow": attempt("print(open('/etc/shadow').read())"),
    "list the host root": attempt("names = os.listdir('/')\nassert 'home' in names or 'bin' in names, names"),
    "read the package source": attempt("print(open({source!r}).read()[:50])"),
    "read a host secret file": attempt("print(open({secret!r}).read())"),
    # these two land in the sandbox's private /tmp, so only the host-side check can fail
    "write to host /tmp": attempt("open({tmp_target!r}, 'w').write('x')\nraise RuntimeError('private /tmp')"),
    "write to the current project": attempt("open({cwd_target!r}, 'w').write('x')"),
    "delete a host file": attempt("os.remove({secret!r})"),
    "symlink out and write": attempt("os.symlink('/tmp', 'out')\nopen('out/' + {tmp_name!r}, 'w').write('x')\n"
                                     "raise RuntimeError('private /tmp')"),
    "write into the stdlib": attempt("import json\nopen(json.__file__, 'a').write('#')"),
    "remount root writable": attempt("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                                     "assert libc.mount(b'none', b'/', None, 32 | 4096, None) == 0"),
    "new user namespace": attempt("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                                  "assert libc.unshare(0x10000000) == 0"),
    "become root": attempt("os.setuid(0)"),
    "os.system": attempt("assert os.system('id > /work/id.txt') == 0"),
    "subprocess shell": attempt("import subprocess\nsubprocess.run(['/bin/sh', '-c', 'id'], check=True)"),
    "connect to a host server": attempt("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)"),
    "resolve a name": attempt("import socket\nsocket.getaddrinfo('example.com', 80)"),
    "network interfaces": attempt("import socket\nassert [n for _, n in socket.if_nameindex() if n != 'lo']"),
    "signal the host bystander": attempt("os.kill({bystander}, 9)"),
    "signal every process": attempt("os.kill(-1, 9)\nimport time\ntime.sleep(0.2)\n"
                                    "raise RuntimeError('only the sandbox is visible')"),
    "ptrace the bystander": attempt("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                                    "assert libc.ptrace(16, {bystander}, None, None) == 0"),
    "read the bystander's environ": attempt("print(open('/proc/{bystander}/environ', 'rb').read())"),
    "raw disk": attempt("open('/dev/vda', 'rb').read(10)"),
    "kernel log": attempt("open('/dev/kmsg', 'rb').read(10)"),
    "sysrq": attempt("open('/proc/sysrq-trigger', 'w').write('h')"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_snippet_is_contained(name, tmp_path, bystander):
    secret = tmp_path / "secret.txt"
    secret.write_text("top-secret")
    tmp_target = Path("/tmp") / f"ftllm-escape-{uuid.uuid4().hex}"
    cwd_target = Path.cwd() / f"ftllm-escape-{uuid.uuid4().hex}"
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    code = "import os\n" + HOSTILE[name].format(
        source=str(Path(ftllm.__file__)), secret=str(secret), tmp_target=str(tmp_target), tmp_name=tmp_target.name,
        cwd_target=str(cwd_target), port=server.getsockname()[1], bystander=bystander.pid,
    )
    try:
        result = run_code(code, BARE)
        assert "ESCAPED" not in result.output, result.output
        assert "blocked" in result.output, (result.output, result.stderr)
        with pytest.raises(socket.timeout):
            server.accept()  # nobody connected
    finally:
        server.close()
    assert secret.read_text() == "top-secret"
    assert not tmp_target.exists() and not cwd_target.exists()
    assert bystander.poll() is None  # alive
    assert "top-secret" not in result.output and "bystander-secret" not in result.output


@pytest.mark.parametrize(
    "code",
    [
        "import os\nwhile True:\n    os.fork()",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nwhile True:\n    if libc.fork() < 0:\n"
        "        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))",
        "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()",
    ],
)
def test_fork_bombs_hit_the_process_limit(code):
    start = time.monotonic()
    result = run_code("import os\n" + code, SandboxLimits(wall_timeout_s=10, max_processes=16, audit_hook=False,
                                                         packages=()))
    assert not result.ok
    assert not result.timed_out  # the bomb ran out of processes long before the clock
    assert "Resource temporarily unavailable" in result.stderr or "can't start new thread" in result.stderr
    assert time.monotonic() - start < 10


def test_the_process_limit_is_per_sandbox():
    """Sandboxes running side by side (TIR's workers) each get the whole limit."""
    from concurrent.futures import ThreadPoolExecutor

    code = ("import os, time\nkids = []\nfor _ in range(10):\n    pid = os.fork()\n    if pid == 0:\n"
            "        time.sleep(1)\n        os._exit(0)\n    kids.append(pid)\n"
            "print(sum(os.waitpid(k, 0)[1] == 0 for k in kids))")
    limits = SandboxLimits(wall_timeout_s=20, max_processes=16, audit_hook=False, packages=())
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: run_code(code, limits), range(6)))
    assert [r.output.strip() for r in results] == ["10"] * 6, [r.stderr for r in results]


def test_audit_hook_is_a_second_layer():
    result = run_code("import os\nos.fork()", LIMITS)
    assert "PermissionError: sandbox: os.fork is not allowed" in result.output


def test_memory_bomb_gets_memory_error():
    result = run_code("x = bytearray(8 * 1024**3)", BARE)
    assert not result.ok
    assert "MemoryError" in result.output


def test_filling_the_disk_stops_at_the_limits():
    code = "with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 2**20)"
    result = run_code(code, SandboxLimits(wall_timeout_s=10, max_file_mb=4, tmpfs_mb=8, audit_hook=False,
                                          packages=()))
    assert not result.ok and not result.timed_out  # SIGXFSZ or ENOSPC, not the clock


def test_infinite_loop_is_stopped_within_the_timeout():
    result = run_code("while True:\n    pass", SandboxLimits(wall_timeout_s=1.5, cpu_time_s=1, audit_hook=False))
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
    with pytest.raises(ValueError, match="sandbox.wall_timeout_s"):
        SandboxLimits(wall_timeout_s="hot")


def test_tir_refuses_without_namespaces(monkeypatch):
    """Where no sandbox can be made, TIR stops before generating and says why on one line."""
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox.sandbox_status.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable, match="refuses to run model code: bwrap .* not installed") as err:
            run_code("print(1)")
        assert "\n" not in str(err.value)
        from ftllm.infer.strategies.tir import run_tir

        with pytest.raises(SandboxUnavailable):
            run_tir(engine=None, problems=[{"id": 1, "problem": "1+1"}], config=None)
    finally:
        sandbox.sandbox_status.cache_clear()
