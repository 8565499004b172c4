"""A process pool with a hard per-task time limit, for parsing and verifying untrusted answers.

Math-Verify bounds its own work with SIGALRM, which fires only in a main thread and only between
Python bytecodes: a huge integer power inside GMP ignores it. So each task runs in the main thread
of a worker process, and a worker that overruns `hard_timeout_s` (or dies) is killed and replaced;
its task's result is `None`. Nothing a task does can crash or hang the caller.

    results = run_guarded(fn, [(a,), (b,)], workers=4, hard_timeout_s=10)   # [fn(a), fn(b)] or None

`GuardedPool` is the same machinery with tasks submitted while the caller works on something else.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait

from tqdm.auto import tqdm

# extra address space a worker may use beyond what it inherited: a runaway SymPy power gets
# a MemoryError instead of swapping the machine
WORKER_MEMORY_BYTES = 3 << 30
# workers run at a lower CPU priority: when they parse during generation, vLLM's own processes
# (scheduling, detokenising; CPU-bound for small models) must not wait for them
WORKER_NICENESS = 10


def _limit_memory() -> None:
    try:
        import resource

        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[0])
        limit = pages * os.sysconf("SC_PAGE_SIZE") + WORKER_MEMORY_BYTES
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    except (OSError, ValueError, ImportError):
        pass  # not Linux: rely on the time limit alone


PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, inherited=()) -> None:
    """Make this forked child end with its parent (call first thing in the child).

    The kernel sends SIGKILL when the parent dies (PR_SET_PDEATHSIG), however the parent ends:
    SIGKILL, SIGTERM or a crash. `inherited` are the parent's ends of pipes that fork copied
    into the child: closed here, so a blocked `recv` sees EOF once the parent's copy is gone too.
    """
    for conn in inherited:
        if conn is not None:
            conn.close()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the closed pipe ends still stop the child on its next recv
    if os.getppid() != parent_pid:
        os._exit(0)  # the parent died before the signal was armed


def own_progress_lock() -> None:
    """Give this forked process its own tqdm lock (call first thing in a forked child).

    tqdm guards its bars with a multiprocessing lock that a forked child shares with its parent.
    A child killed while holding it (a hard timeout, a test's SIGKILL) leaves every later progress
    bar in the parent waiting forever.
    """
    from tqdm import std

    classes = [std.tqdm]
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        if cls is std.tqdm or "_lock" in vars(cls):
            cls.set_lock(threading.RLock())


def _serve(conn, fn: Callable, parent_pid: int, inherited) -> None:
    """Worker loop: run tasks until the parent sends None or goes away."""
    die_with_parent(parent_pid, inherited)
    own_progress_lock()
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # timeouts would print whole answers
    _limit_memory()
    try:
        os.nice(WORKER_NICENESS)
    except OSError:
        pass
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):
            return
        if item is None:
            return
        index, args = item
        try:
            conn.send((index, fn(*args)))
        except BaseException:  # noqa: BLE001 - a task failure is a None result, never a dead worker
            conn.send((index, None))


class _Worker:
    def __init__(self, ctx, fn: Callable):
        self.conn, child = ctx.Pipe()
        # under fork the child gets a copy of our end (closed there); under spawn nothing is inherited
        inherited = (self.conn,) if ctx.get_start_method() == "fork" else ()
        self.proc = ctx.Process(target=_serve, args=(child, fn, os.getpid(), inherited), daemon=True)
        self.proc.start()
        child.close()
        self.task: int | None = None
        self.started = 0.0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.kill()


def _context():
    # fork: workers inherit the imported SymPy/Math-Verify, so they start in milliseconds
    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


class GuardedPool:
    """Background workers for `fn`: submit tasks as they come (from any thread), collect results at the end.

    A manager thread feeds idle workers and enforces `hard_timeout_s`, so tasks run while the caller
    does something else (the predict stage parses finished samples while vLLM is still generating).

        with GuardedPool(parse, workers=8, hard_timeout_s=12) as pool:
            pool.submit("a", (text_a,)); pool.submit("b", (text_b,))
            pool.results()   # {"a": parse(text_a), "b": None if it hung, raised or died}
    """

    def __init__(
        self, fn: Callable, workers: int = 4, hard_timeout_s: float = 30.0, desc: str | None = None,
        on_result: Callable | None = None,
    ):
        self.fn, self.hard_timeout_s, self.on_result = fn, hard_timeout_s, on_result
        self.active = max(0, workers)  # how many workers may be busy at once (`set_active`)
        self.inline = workers <= 0  # in-process (debugging): only Math-Verify's own alarms bound the time
        self._results: dict = {}
        self._queue: deque = deque()
        self._ids: dict = {}  # key -> task id; tasks travel to workers under their small id, not the key
        self._keys: list = []
        self._limits: list[float] = []  # per task: its hard time limit
        self._in_flight = 0
        self._closing = False
        self._done = threading.Condition()
        self._bar = tqdm(total=0, desc=desc, disable=desc is None)
        self._ctx = _context()
        self._pool: list[_Worker] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)  # a full pipe already means "wake up"
        self._thread = None
        if not self.inline:
            # forked here, from the caller's thread; only replacements are forked by the manager thread
            self._pool = [_Worker(self._ctx, fn) for _ in range(workers)]
            self._thread = threading.Thread(target=self._manage, name="guarded-pool", daemon=True)
            self._thread.start()

    def submit(self, key, args: tuple, hard_timeout_s: float | None = None) -> None:
        """Queue `fn(*args)` under `key`; a key already submitted is ignored (identical work runs once).

        `hard_timeout_s` overrides the pool's limit for this task. `on_result(key, value)` is called
        as each task ends (from the manager thread), before `results` can return: it may submit more.
        """
        with self._done:
            if key in self._ids:
                return
            self._ids[key] = len(self._keys)
            self._keys.append(key)
            self._limits.append(self.hard_timeout_s if hard_timeout_s is None else hard_timeout_s)
            self._queue.append((self._ids[key], args))
            self._bar.total += 1
        self._wake()

    def set_active(self, n: int) -> None:
        """Let at most `n` workers run at once (0 pauses the pool; its tasks wait, `results` too)."""
        with self._done:
            self.active = max(0, min(n, len(self._pool))) if not self.inline else n
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def results(self) -> dict:
        """Wait for every submitted task; {key: result, or None when it raised, hung or killed its worker}."""
        if self.inline:
            while self._queue:
                task, args = self._queue.popleft()
                value = _call(self.fn, args)
                self._results[self._keys[task]] = value
                if self.on_result:
                    self.on_result(self._keys[task], value)
                self._bar.update(1)
            return dict(self._results)
        with self._done:
            self._done.wait_for(lambda: not self._queue and self._in_flight == 0)
            return dict(self._results)

    def close(self) -> None:
        with self._done:
            self._closing = True
        self._wake()
        if self._thread is not None:
            self._thread.join()
        for w in self._pool:
            w.stop()
        self._bar.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _manage(self) -> None:
        """Feed idle workers, collect answers, kill and replace workers that overrun or die."""
        while True:
            with self._done:
                if self._closing and self._in_flight == 0:
                    return
                busy = sum(w.task is not None for w in self._pool)
                for w in self._pool:
                    if busy >= self.active:
                        break
                    if w.task is None and self._queue:
                        busy += 1
                        w.task, args = self._queue.popleft()
                        w.started = time.monotonic()
                        w.conn.send((w.task, args))
                        self._in_flight += 1
            busy = [w for w in self._pool if w.task is not None]
            deadline = min((w.started + self._limits[w.task] for w in busy), default=None)
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait([w.conn for w in busy] + [self._wake_r], timeout=timeout)
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            for i, w in enumerate(self._pool):
                if w.task is None:
                    continue
                if w.conn in ready:
                    try:
                        task, value = w.conn.recv()
                    except (EOFError, OSError):  # the worker died mid-task (segfault, OOM kill)
                        self._finish(w.task, None)
                        self._pool[i] = _replace(self._ctx, self.fn, w)
                        continue
                    w.task = None
                    self._finish(task, value)
                elif time.monotonic() - w.started > self._limits[w.task]:
                    self._finish(w.task, None)
                    self._pool[i] = _replace(self._ctx, self.fn, w)

    def _finish(self, task: int, value) -> None:
        key = self._keys[task]
        with self._done:
            self._results[key] = value
        if self.on_result:  # while the task still counts as in flight: `results` waits for what it submits
            try:
                self.on_result(key, value)
            except Exception:  # noqa: BLE001 - a failing observer must not stop the pool
                logging.getLogger(__name__).exception("on_result failed for %r", key)
        with self._done:
            self._in_flight -= 1
            self._bar.update(1)
            self._done.notify_all()


def run_guarded(
    fn: Callable, tasks: Sequence[tuple], workers: int = 4, hard_timeout_s: float = 30.0, desc: str | None = None
) -> list:
    """`[fn(*t) for t in tasks]`, in parallel; a task that raises, dies or overruns gives None."""
    if not tasks:
        return []
    with GuardedPool(fn, min(workers, len(tasks)), hard_timeout_s, desc) as pool:
        for i, t in enumerate(tasks):
            pool.submit(i, t)
        results = pool.results()
    return [results.get(i) for i in range(len(tasks))]


def _replace(ctx, fn: Callable, worker: _Worker) -> _Worker:
    worker.kill()
    return _Worker(ctx, fn)


def _call(fn: Callable, args: tuple):
    try:
        return fn(*args)
    except Exception:
        return None
