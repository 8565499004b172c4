"""Run untrusted model-written Python in a fresh interpreter inside Linux namespaces (bubblewrap).

    result = run_code("print(2**10)", SandboxLimits(wall_timeout_s=5))
    result.output  # "1024\n"

Each snippet gets a new `python -I -S` started by `bwrap` in its own user, mount, pid, net,
ipc, uts and cgroup namespaces. What that gives, and what holds it:

- **Files.** The filesystem the snippet sees is built from nothing: the shared libraries
  (`/usr/lib`), the interpreter and its standard library read-only (its `site-packages`
  hidden under an empty tmpfs), the packages named in `SandboxLimits.packages` read-only under
  `/pkgs`, a private `/proc` and `/dev`, and two size-capped tmpfs folders (`/work`, its
  working directory, and `/tmp`) that vanish with it. The rest of the root is read-only.
  There is no shell, no `/etc`, no home and no project folder to read or write.
- **Environment.** `bwrap` itself starts with an empty environment (`--clearenv` clears only
  the child's), so no process in the sandbox holds the pipeline's variables, and its `/proc`
  shows only its own processes: `/proc/<ppid>/environ` is not the parent's.
- **Network.** An empty network namespace: not even loopback is up.
- **Processes.** `RLIMIT_NPROC` caps the processes the snippet may run. The kernel exempts
  uid 0 from that limit, so when the pipeline runs as root `bwrap` is started as uid 65534;
  the snippet's user namespace then maps to an unprivileged user. `RLIMIT_CPU`, `RLIMIT_AS`,
  `RLIMIT_FSIZE`, `RLIMIT_NOFILE` and `RLIMIT_CORE` bound the rest.
- **Kill.** The snippet runs under a pid-1 reaper in its own pid namespace. When the snippet
  ends, or when the wall clock kills `bwrap`, pid 1 dies (`--die-with-parent`) and the kernel
  kills every process in the namespace, `setsid` daemons included. If the pipeline itself
  dies, the same parent-death signal takes the sandbox down.

A Python audit hook (no sockets, no process spawning, no ctypes) is installed as a second
layer when `SandboxLimits.audit_hook` is on; nothing above relies on it.

Where `bwrap` is missing or namespaces cannot be created (some container runtimes forbid
them), `run_code` raises `SandboxUnavailable` with the reason on one line instead of running
model code unconfined. `sandbox_status()` probes once per process.
"""
from __future__ import annotations

import atexit
import dataclasses
import functools
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

from ftllm.config import ConfigError

NOBODY = 65534  # the uid bwrap runs as when the pipeline is root (see module doc)


class SandboxUnavailable(ConfigError):
    """No isolated sandbox can be made on this machine; the message says why, on one line."""


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one snippet (YAML keys under `predict.tir.sandbox`)."""

    wall_timeout_s: float = 10.0
    cpu_time_s: int = 10
    memory_mb: int = 1024  # address space; sympy's import needs ~200 MB of it
    max_processes: int = 16  # RLIMIT_NPROC inside the snippet's own user namespace
    max_file_mb: int = 16  # RLIMIT_FSIZE: biggest file the snippet (or its output) may write
    tmpfs_mb: int = 64  # size of each private tmpfs (/work and /tmp)
    max_output_chars: int = 2000  # stdout/stderr returned to the model are cut to this
    packages: tuple[str, ...] = ("sympy", "mpmath")  # importable besides the stdlib (read-only)
    audit_hook: bool = True  # second layer only; the namespaces hold without it

    def __post_init__(self) -> None:
        for name in ("wall_timeout_s", "cpu_time_s", "memory_mb", "max_processes", "max_file_mb", "tmpfs_mb",
                     "max_output_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"sandbox.{name} must be a number > 0, got {value!r}")
        object.__setattr__(self, "packages", tuple(self.packages))


@dataclasses.dataclass
class SandboxResult:
    """What one snippet did."""

    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool
    network_isolated: bool = True  # always: the snippet only ever runs in an empty network namespace

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


# The child's bootstrap, run as `python -I -S -c _RUNNER <limits>` inside the namespaces. The
# snippet arrives on stdin, so nothing of it is on a filesystem the sandbox can see.
_RUNNER = r'''
import ast, json, os, resource, sys

limits = json.loads(sys.argv[1])
code = sys.stdin.read()
null = os.open("/dev/null", os.O_RDONLY)
os.dup2(null, 0)
os.close(null)
for name, value in (("RLIMIT_CPU", limits["cpu"]), ("RLIMIT_AS", limits["memory"]),
                    ("RLIMIT_NPROC", limits["nproc"]), ("RLIMIT_FSIZE", limits["fsize"]),
                    ("RLIMIT_NOFILE", 256), ("RLIMIT_CORE", 0)):
    resource.setrlimit(getattr(resource, name), (value, value))
if os.path.isdir("/pkgs"):
    sys.path.append("/pkgs")

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

if limits["audit_hook"]:
    DENIED = ("os.fork", "os.forkpty", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "subprocess.Popen",
              "pty.spawn", "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
              "ctypes.call_function", "ctypes.dlsym")

    def hook(event, args, denied=frozenset(DENIED)):
        if event in denied:
            raise PermissionError(f"sandbox: {event} is not allowed")

    sys.addaudithook(hook)
exec(compiled, {"__name__": "__main__", "__sandbox_show__": show})
'''


def _interpreter_paths() -> tuple[str, list[str], list[str]]:
    """(interpreter, paths to expose read-only, paths to hide under an empty tmpfs)."""
    exe = os.path.realpath(sys.executable)
    where = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix,
             "installed_base": sys.base_prefix, "installed_platbase": sys.base_exec_prefix}
    expose = [exe]
    for key in ("stdlib", "platstdlib"):
        expose.append(os.path.realpath(sysconfig.get_path(key, vars=where)))
    soname = sysconfig.get_config_var("INSTSONAME")
    libdir = sysconfig.get_config_var("LIBDIR")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and soname and libdir:
        expose.append(os.path.realpath(os.path.join(libdir, soname)))
    hide = [os.path.realpath(sysconfig.get_path(key, vars=where)) for key in ("purelib", "platlib")]
    return exe, _dedupe(p for p in expose if os.path.exists(p)), _dedupe(p for p in hide if os.path.isdir(p))


def _dedupe(paths) -> list[str]:
    out: list[str] = []
    for p in paths:
        if p not in out:
            out.append(p)
    return out


def _package_dirs(names: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec and spec.submodule_search_locations:
            found[name] = os.path.realpath(list(spec.submodule_search_locations)[0])
    return found


def _reachable(path: str) -> bool:
    """Whether uid 65534 can reach `path`: every folder above it searchable by others."""
    parts = Path(path).parents
    return all(os.stat(p).st_mode & 0o001 for p in parts) and bool(os.stat(path).st_mode & 0o004)


_BULKY = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"}


_MIRROR_LOCK = threading.Lock()  # TIR starts sandboxes from several threads at once


def _mirror(path: str, hidden: tuple[str, ...]) -> str:
    with _MIRROR_LOCK:
        return _make_mirror(path, hidden)


@functools.cache
def _make_mirror(path: str, hidden: tuple[str, ...]) -> str:
    """A copy of `path` that uid 65534 can read, made of hard links (a copy across filesystems).

    The interpreter often lives where only root can go (pyenv under /root); the sandbox runs
    as 65534, so it gets this mirror, mounted back at the original path inside.
    """
    root = tempfile.mkdtemp(prefix="ftllm-sandbox-python-")
    os.chmod(root, 0o755)
    atexit.register(shutil.rmtree, root, True)
    dest = os.path.join(root, "x")
    src = Path(path)

    def place(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)
        os.chmod(b, os.stat(b).st_mode | 0o444)

    if src.is_file():
        place(path, dest)
        return dest
    for folder, dirs, files in os.walk(path):
        target = os.path.join(dest, os.path.relpath(folder, path))
        os.makedirs(target, exist_ok=True)
        os.chmod(target, 0o755)
        for d in dirs:
            if os.path.join(folder, d) in hidden:
                os.mkdir(os.path.join(target, d), 0o755)  # an empty mount point for the tmpfs that hides it
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in hidden and d not in _BULKY]
        for name in files:
            place(os.path.join(folder, name), os.path.join(target, name))
    return dest


def _command(limits: SandboxLimits) -> tuple[list[str], dict]:
    """The bwrap command line and Popen's user arguments."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("bwrap (bubblewrap) is not installed; `apt-get install bubblewrap` "
                                 "(make install does it when run as root)")
    exe, expose, hide = _interpreter_paths()
    as_nobody = os.geteuid() == 0

    def ro_bind(src: str, dest: str) -> list[str]:
        if as_nobody and not _reachable(src):
            src = _mirror(src, tuple(hide))
        return ["--ro-bind", src, dest]

    tmpfs = str(int(limits.tmpfs_mb) * 2**20)
    args = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--clearenv", "--cap-drop", "ALL"]
    for var, value in (("HOME", "/work"), ("TMPDIR", "/tmp"), ("LANG", "C.UTF-8"), ("LC_ALL", "C.UTF-8"),
                       ("PYTHONDONTWRITEBYTECODE", "1"), ("OMP_NUM_THREADS", "1"), ("OPENBLAS_NUM_THREADS", "1")):
        args += ["--setenv", var, value]
    for lib in ("/usr/lib", "/usr/lib64"):
        if os.path.isdir(lib):
            args += ro_bind(lib, lib)
    for top in ("/lib", "/lib64"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ro_bind(top, top)
    if os.path.exists("/etc/ld.so.cache"):
        args += ro_bind("/etc/ld.so.cache", "/etc/ld.so.cache")
    for path in expose:
        if not path.startswith(("/usr/lib/", "/usr/lib64/")):
            args += ro_bind(path, path)
    for path in hide:
        args += ["--tmpfs", path, "--remount-ro", path]
    for name, path in _package_dirs(limits.packages).items():
        args += ro_bind(path, f"/pkgs/{name}")
    args += ["--proc", "/proc", "--dev", "/dev", "--size", tmpfs, "--tmpfs", "/tmp", "--size", tmpfs,
             "--tmpfs", "/work", "--chdir", "/work", "--remount-ro", "/"]
    args += [exe, "-I", "-S", "-c", _RUNNER]
    user = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if as_nobody else {}
    return args, user


@functools.cache
def sandbox_status() -> str | None:
    """None when sandboxes work here, else why not (one line). Probed once per process."""
    try:
        result = _run("print(6 * 7)", SandboxLimits(wall_timeout_s=30, packages=()))
    except SandboxUnavailable as err:
        return str(err)
    if result.ok and result.stdout.strip() == "42":
        return None
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    why = lines[-1] if lines else f"exit status {result.returncode}"
    return f"bubblewrap cannot create the sandbox's namespaces here ({why})"


def require_sandbox() -> None:
    """Raise SandboxUnavailable (one line) unless model code can run isolated on this machine."""
    why = sandbox_status()
    if why is not None:
        raise SandboxUnavailable(f"tool-integrated reasoning refuses to run model code: {why}")


def run_code(code: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Execute `code` in a fresh sandboxed interpreter and return its (truncated) output."""
    require_sandbox()
    return _run(code, limits)


def _run(code: str, limits: SandboxLimits) -> SandboxResult:
    argv, user = _command(limits)
    argv.append(json.dumps({
        "cpu": int(limits.cpu_time_s),
        "memory": int(limits.memory_mb) * 2**20,
        "nproc": int(limits.max_processes),
        "fsize": int(limits.max_file_mb) * 2**20,
        "audit_hook": bool(limits.audit_hook),
    }))
    private = Path(tempfile.mkdtemp(prefix="ftllm-sandbox-"))  # the parent's side: never mounted inside
    try:
        (private / "snippet.py").write_text(code, encoding="utf-8")
        with open(private / "snippet.py", "rb") as stdin, open(private / "stdout", "wb") as out, \
                open(private / "stderr", "wb") as err:
            # the output files are opened here and only their descriptors cross, so the kernel's
            # RLIMIT_FSIZE (set inside) caps what the snippet can write to them
            proc = subprocess.Popen(
                argv, cwd="/", env={}, stdin=stdin, stdout=out, stderr=err, start_new_session=True, **user,
            )
            timed_out = _wait_or_kill(proc, limits.wall_timeout_s)
        return SandboxResult(
            stdout=_read_truncated(private / "stdout", limits.max_output_chars),
            stderr=_read_truncated(private / "stderr", limits.max_output_chars, keep="tail"),
            returncode=None if timed_out else proc.returncode,
            timed_out=timed_out,
        )
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _wait_or_kill(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait for bwrap; on timeout SIGKILL it, which tears the pid namespace down. True on timeout."""
    try:
        proc.wait(timeout=timeout_s)
        return False
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    deadline = time.monotonic() + 5
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return True


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
