"""The reaper: every process this one spawns goes when it goes, however it ends (Linux).

Used by the stages that start processes of their own in other process groups or below vLLM (predict's voter and
pool, rl's `vllm serve`), so a stage killed by a deadline or an OOM killer leaves nothing on the card.
"""
from __future__ import annotations

import os
import sys

# The reaper: a small separate interpreter that watches this process. While it lives, the reaper
# keeps a snapshot of its descendants (pid and start time, from /proc, every REAPER_PERIOD_S);
# when it dies, however it died, the reaper SIGKILLs every process of the last snapshot still
# alive, then exits. It covers children that set no parent-death signal themselves (vLLM's
# engine core and workers). Polling, not a pipe: forked children would inherit a pipe's write end.
REAPER_PERIOD_S = 0.3
_REAPER = r"""
import os, signal, sys, time
parent, me, period = int(sys.argv[1]), os.getpid(), float(sys.argv[2])

def family():
    children, started = {}, {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            children.setdefault(int(fields[1]), []).append(int(name))
            started[int(name)] = fields[19]
    found, todo = {}, [parent]
    while todo:
        for child in children.get(todo.pop(), []):
            if child != me:
                found[child] = started[child]
                todo.append(child)
    return found

last = {}
while os.getppid() == parent:
    last = family()
    time.sleep(period)
for pid, start in last.items():
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        if stat[stat.rindex(")") + 2:].split()[19] == start:
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass
"""
_reaper = None


def start_reaper() -> None:
    """Make every process this one spawns (now or later) die with it, once per process (Linux)."""
    global _reaper
    if _reaper is not None and _reaper.poll() is None or not os.path.isdir("/proc"):
        return
    import subprocess

    _reaper = subprocess.Popen([sys.executable, "-I", "-S", "-c", _REAPER, str(os.getpid()), str(REAPER_PERIOD_S)],
                               stdin=subprocess.DEVNULL, env={})
