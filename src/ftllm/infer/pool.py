"""A process pool with a hard per-task time limit, for parsing and verifying untrusted answers.

Math-Verify bounds its own work with SIGALRM, which fires only in a main thread and only between
Python bytecodes: a huge integer power inside GMP ignores it. So each task runs in the main thread
of a worker process, and a worker that overruns `hard_timeout_s` (or dies) is killed and replaced;
its task's result is `None`. Nothing a task does can crash or hang the caller.

    results = run_guarded(fn, [(a,), (b,)], workers=4, hard_timeout_s=10)   # [fn(a), fn(b)] or None
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import time
from collections import deque
from multiprocessing.connection import wait
from typing import Callable, Sequence

from tqdm.auto import tqdm

# extra address space a worker may use beyond what it inherited: a runaway SymPy power gets
# a MemoryError instead of swapping the machine
WORKER_MEMORY_BYTES = 3 << 30


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


def _serve(conn, fn: Callable) -> None:
    """Worker loop: run tasks until the parent sends None."""
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # timeouts would print whole answers
    _limit_memory()
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
        self.proc = ctx.Process(target=_serve, args=(child, fn), daemon=True)
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


def run_guarded(
    fn: Callable, tasks: Sequence[tuple], workers: int = 4, hard_timeout_s: float = 30.0, desc: str | None = None
) -> list:
    """`[fn(*t) for t in tasks]`, in parallel; a task that raises, dies or overruns gives None."""
    results: list = [None] * len(tasks)
    if not tasks:
        return results
    if workers <= 0:  # in-process (debugging): only Math-Verify's own alarms bound the time
        return [_call(fn, t) for t in tqdm(tasks, desc=desc, disable=desc is None)]
    ctx = _context()
    queue = deque(range(len(tasks)))
    pool = [_Worker(ctx, fn) for _ in range(min(workers, len(tasks)))]
    bar = tqdm(total=len(tasks), desc=desc, disable=desc is None)
    try:
        while queue or any(w.task is not None for w in pool):
            for w in pool:
                if w.task is None and queue:
                    w.task, w.started = queue.popleft(), time.monotonic()
                    w.conn.send((w.task, tasks[w.task]))
            busy = [w for w in pool if w.task is not None]
            deadline = min(w.started for w in busy) + hard_timeout_s
            ready = wait([w.conn for w in busy], timeout=max(0.0, deadline - time.monotonic()))
            for i, w in enumerate(pool):
                if w.task is None:
                    continue
                if w.conn in ready:
                    try:
                        index, value = w.conn.recv()
                        results[index] = value
                    except (EOFError, OSError):  # the worker died mid-task (segfault, OOM kill)
                        pool[i] = _replace(ctx, fn, w)
                        bar.update(1)
                        continue
                    w.task = None
                    bar.update(1)
                elif time.monotonic() - w.started > hard_timeout_s:
                    pool[i] = _replace(ctx, fn, w)
                    bar.update(1)
    finally:
        bar.close()
        for w in pool:
            w.stop()
    return results


def _replace(ctx, fn: Callable, worker: _Worker) -> _Worker:
    worker.kill()
    return _Worker(ctx, fn)


def _call(fn: Callable, args: tuple):
    try:
        return fn(*args)
    except Exception:
        return None
