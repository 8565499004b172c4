"""Run untrusted model-written Python in a child process, for tool-integrated reasoning.

    result = run_code("print(2**10)", SandboxLimits(wall_timeout_s=5))
    result.output  # "1024\n"

What is enforced, and by what (honestly):

- **Time.** `RLIMIT_CPU` stops a busy loop at `cpu_time_s`; a wall-clock timeout kills the
  child's whole process group (it starts in its own session) with SIGKILL, so sleeping or
  blocked code is stopped too.
- **Memory.** `RLIMIT_AS` caps the address space; large allocations raise `MemoryError`.
- **Output.** stdout/stderr go to files capped by `RLIMIT_FSIZE` (the kernel stops the child
  past it) and are read back truncated to `max_output_chars`, so a print loop cannot flood
  the parent's memory.
- **Network.** The child first tries to enter a fresh, empty network namespace
  (`unshare(CLONE_NEWNET)`, or with `CLONE_NEWUSER` when unprivileged); there, not even
  loopback is up. `SandboxResult.network_isolated` says whether that worked. Independently,
  a Python audit hook refuses to create sockets or resolve names.
- **Files.** The working directory is a fresh temporary folder (also `HOME` and `TMPDIR`),
  deleted afterwards. The audit hook refuses opening files for writing outside it, refuses
  reads outside it and the Python installation (stdlib and site-packages must stay readable
  for imports), and refuses remove/rename/mkdir/chmod/links/chdir outside it.
- **Processes.** The audit hook refuses fork, exec, spawn, `os.system` and `subprocess`, plus
  ctypes foreign calls (which could reach libc directly). `RLIMIT_NPROC` is set as a
  second line, but the kernel does not apply it to root, so for root the hook and the
  process-group kill are what contain a fork bomb.

What is NOT enforced: audit hooks are not a security boundary against a determined
attacker with C-level access (a compiled extension module that forks or opens files
bypasses them). Use this to contain accidental or sloppy model code; for hostile code run
the whole predict stage inside a container with no network (as the competition does).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one snippet (YAML keys under `predict.tir.sandbox`)."""

    wall_timeout_s: float = 10.0
    cpu_time_s: int = 10
    memory_mb: int = 1024  # address space; numpy/sympy imports need ~300 MB of it
    max_processes: int = 64  # RLIMIT_NPROC (per user; ignored by the kernel for root)
    max_file_mb: int = 16  # RLIMIT_FSIZE: biggest file the snippet (or its output) may write
    max_output_chars: int = 2000  # stdout/stderr returned to the model are cut to this

    def __post_init__(self) -> None:
        for name in ("wall_timeout_s", "cpu_time_s", "memory_mb", "max_processes", "max_file_mb", "max_output_chars"):
            if getattr(self, name) <= 0:
                raise ValueError(f"sandbox.{name} must be > 0, got {getattr(self, name)}")


@dataclasses.dataclass
class SandboxResult:
    """What one snippet did."""

    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool
    network_isolated: bool  # a private network namespace was entered

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def output(self) -> str:
        """What a TIR prompt shows the model: stdout, or the error's last line when it failed."""
        if self.timed_out:
            return (self.stdout.rstrip("\n") + "\nTimeoutError: execution timed out").lstrip("\n")
        if self.ok:
            return self.stdout
        lines = [ln for ln in self.stderr.strip().splitlines() if ln.strip()]
        error = lines[-1] if lines else f"process exited with status {self.returncode}"
        return (self.stdout.rstrip("\n") + "\n" + error).lstrip("\n")


# The child's bootstrap. It runs in `python -I` (no env vars, no user site, no cwd on the
# path), sets its own limits, isolates the network, installs the audit hook, then executes
# the snippet. It is kept as source text so the child needs nothing from this package.
_RUNNER = r'''
import ast, json, os, resource, sys

work, code_path, status_path, limits = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
work = os.path.realpath(work)
with open(code_path, encoding="utf-8") as f:
    code = f.read()

for name, value in (("RLIMIT_CPU", limits["cpu"]), ("RLIMIT_AS", limits["memory"]),
                    ("RLIMIT_NPROC", limits["nproc"]), ("RLIMIT_FSIZE", limits["fsize"]), ("RLIMIT_CORE", 0)):
    resource.setrlimit(getattr(resource, name), (value, value))

isolated = False
ctypes = None
try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
    isolated = libc.unshare(CLONE_NEWNET) == 0 or libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0
except Exception:
    pass
with open(status_path, "w") as f:
    json.dump({"network_isolated": isolated}, f)

roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix) if p}
roots |= {os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)}
read_roots = tuple(sorted(roots)) + (work,)
read_files = {"/dev/null", "/dev/urandom", "/dev/random", "/etc/localtime"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

def inside(path, bases):
    if isinstance(path, int):
        return True  # an already open descriptor
    path = os.path.realpath(os.fsdecode(path))
    return any(path == b or path.startswith(b.rstrip("/") + "/") for b in bases)

DENIED = ("os.fork", "os.forkpty", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "subprocess.Popen",
          "pty.spawn", "os.kill", "os.killpg", "socket.__new__", "socket.connect", "socket.bind",
          "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.sendto",
          "ctypes.call_function", "ctypes.dlsym", "ctypes.cdata", "os.chroot", "os.setuid")
PATH_WRITES = ("os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.utime",
               "os.link", "os.symlink", "os.rename", "shutil.rmtree", "os.chdir", "os.mkfifo", "os.mknod")

def hook(event, args):
    if event in DENIED:
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open":
        path, mode, flags = args
        writing = (mode is not None and any(c in mode for c in "wax+")) or (flags or 0) & WRITE_FLAGS
        if writing and not inside(path, (work,)):
            raise PermissionError(f"sandbox: writing outside the work folder is not allowed: {path}")
        if not writing and not isinstance(path, int) and os.fsdecode(path) not in read_files \
                and not inside(path, read_roots):
            raise PermissionError(f"sandbox: reading outside the work folder is not allowed: {path}")
    elif event in PATH_WRITES:
        # rename, link and symlink name two paths; both must stay inside
        paths = [a for a in args[:2 if event in ("os.rename", "os.link", "os.symlink") else 1]
                 if isinstance(a, (str, bytes, os.PathLike))]
        for p in paths:
            if not inside(p, (work,)):
                raise PermissionError(f"sandbox: {event} outside the work folder is not allowed: {p}")
    elif event in ("os.listdir", "os.scandir") and args and args[0] is not None:
        if not inside(args[0], read_roots):
            raise PermissionError(f"sandbox: listing outside the work folder is not allowed: {args[0]}")

tree = ast.parse(code, filename="<snippet>")
# Like a notebook cell: a trailing bare expression is printed, since models often end with `x`.
if tree.body and isinstance(tree.body[-1], ast.Expr):
    last = tree.body[-1]
    tree.body[-1] = ast.copy_location(ast.Expr(ast.Call(
        ast.Name("__sandbox_show__", ast.Load()), [last.value], [])), last)
    ast.fix_missing_locations(tree)
compiled = compile(tree, "<snippet>", "exec")

def show(value):
    if value is not None:
        print(value)

sys.addaudithook(hook)
del ctypes
exec(compiled, {"__name__": "__main__", "__sandbox_show__": show})
'''


def run_code(code: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Execute `code` in a fresh sandboxed Python process and return its (truncated) output."""
    scratch = Path(tempfile.mkdtemp(prefix="ftllm-sandbox-"))
    work, private = scratch / "work", scratch / "private"  # the snippet may only touch `work`
    work.mkdir()
    private.mkdir()
    code_path, status_path = private / "snippet.py", private / "status.json"
    code_path.write_text(code, encoding="utf-8")
    child_limits = {
        "cpu": int(limits.cpu_time_s),
        "memory": int(limits.memory_mb) * 2**20,
        "nproc": int(limits.max_processes),
        "fsize": int(limits.max_file_mb) * 2**20,
    }
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(work),
        "TMPDIR": str(work),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1",  # BLAS thread pools would reserve address space per thread
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    argv = [sys.executable, "-I", "-c", _RUNNER, str(work), str(code_path), str(status_path), json.dumps(child_limits)]
    try:
        with open(private / "stdout", "wb") as out, open(private / "stderr", "wb") as err:
            proc = subprocess.Popen(
                argv, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
            )
            timed_out = _wait_or_kill(proc, limits.wall_timeout_s)
        status = json.loads(status_path.read_text()) if status_path.exists() else {}
        return SandboxResult(
            stdout=_read_truncated(private / "stdout", limits.max_output_chars),
            stderr=_read_truncated(private / "stderr", limits.max_output_chars, keep="tail"),
            returncode=None if timed_out else proc.returncode,
            timed_out=timed_out,
            network_isolated=bool(status.get("network_isolated")),
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _wait_or_kill(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait for the child; on timeout SIGKILL its whole process group. True when it timed out."""
    try:
        proc.wait(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    # Kill the group even after a normal exit: a snippet may have left children behind.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if timed_out:
        deadline = time.monotonic() + 5
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    return timed_out


def _read_truncated(path: Path, max_chars: int, keep: str = "head") -> str:
    """At most `max_chars` characters of a possibly huge output file (never read whole)."""
    size = path.stat().st_size
    limit = max_chars * 4  # UTF-8: at most 4 bytes a character
    with path.open("rb") as f:
        if keep == "tail" and size > limit:
            f.seek(size - limit)
        data = f.read(limit)
    text = data.decode("utf-8", errors="replace")
    if len(text) > max_chars or size > limit:
        text = text[-max_chars:] if keep == "tail" else text[:max_chars] + "\n…[output truncated]"
    return text
