"""Run the whole DAG on one GPU with a profile (default: rehearsal) and record what each stage cost.

    python benchmarks/rehearsal.py --profile rehearsal --out benchmarks/results/rehearsal_h200.json

It runs `dvc exp run -S profile=<profile>` exactly as a team would, timestamps each "Running stage" line DVC prints,
samples the GPU's used memory (NVML) every 0.2 s, and afterwards reads each stage's own metrics file. Per stage: wall
seconds, peak GPU memory (GiB, whole card), tokens and tokens/s where the stage reports tokens, for each vLLM engine
it started how long the engine took to come up against how long it served, and a finished stage's whole metrics
file (a lent box sends back only so many files). A stage DVC skipped (cached) is listed as skipped. Outside a git
repository (a bare copy on a GPU box) it first makes one, because `dvc exp` needs git.

A run longer than one call goes on in the next with `--continue` (same box): each call keeps its result and DVC's
lock file in `.rehearsal/`, and the next puts the lock back before DVC starts.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
STATE_DIR = ROOT / ".rehearsal"  # the last call's result and dvc.lock, for --continue

STAGE_LINE = re.compile(r"Running stage '([^']+)'")
SKIP_LINE = re.compile(r"Stage '([^']+)' (?:didn't change, skipping|is cached - skipping run)")
# the lines vLLM (0.26 on GPU, 0.32 on CPU) logs as an engine comes up and goes away, in order
ENGINE_LINES = {
    "args": re.compile(r"non-default args:"),  # LLM(...) was called: the stage has imported vLLM
    "process": re.compile(r"Initializing a V1 LLM engine"),  # the engine core is up (a spawned process by default)
    "ready": re.compile(r"init engine \(profile, create kv cache, warmup model\) took"),
    "shutdown": re.compile(r"\[shutdown\]"),
}


class MemorySampler(threading.Thread):
    """Used memory of GPU 0 over time, as NVML reports it (every process on the card, vLLM's included)."""

    def __init__(self, period_s: float = 0.2):
        super().__init__(daemon=True)
        self.period_s, self.samples, self.stopped = period_s, [], threading.Event()

    def run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVML (CPU box): record nothing
            return
        while not self.stopped.is_set():
            used = pynvml.nvmlDeviceGetMemoryInfo(handle).used
            self.samples.append((time.monotonic(), used / 2**30))
            time.sleep(self.period_s)

    def peak(self, start: float, end: float) -> float | None:
        values = [gib for t, gib in self.samples if start <= t <= end]
        return round(max(values), 2) if values else None


def stage_metrics(name: str) -> dict:
    """The stage's own metrics file ({} where it wrote none)."""
    key = name.split("@")[0]
    suffix = name.split("@")[1] if "@" in name else None
    path = ROOT / "metrics" / (f"{key}-{suffix}.json" if suffix else f"{key}.json")
    return json.loads(path.read_text()) if path.exists() else {}


def stage_tokens(metrics: dict) -> tuple[int | None, str | None]:
    """Tokens a stage processed, from its metrics (None where it reports none), and the field they came from."""
    for field in ("tokens_generated", "tokens", "tokens_seen", "train_tokens", "tokens_trained", "generated_tokens",
                  "num_tokens"):
        if isinstance(metrics.get(field), (int, float)):
            return int(metrics[field]), field
    return None, None


def stage_pids(group: int) -> list[int]:
    """Processes of the run's group that are stage scripts (`stages/<name>.py`), found through /proc."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if os.getpgid(int(entry.name)) != group:
                continue
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if any(part.startswith(b"stages/") and part.endswith(b".py") for part in cmdline):
            pids.append(int(entry.name))
    return pids


def engine_phases(events: list[tuple[float, str]], begin: float, finish: float) -> dict | None:
    """Where a stage's time went around its vLLM engines, from the times ENGINE_LINES appeared (seconds).

    Per engine: `before_s` from the stage's start (or the last engine's shutdown) to LLM(...), `process_s` until the
    engine core logs, `init_s` until it is ready (compile, graphs, warm-up), and `serving_s` from ready to shutdown
    (or the stage's end): the only part that generates. None for a stage without an engine.
    """
    engines, current, since = [], None, begin
    for t, kind in sorted(e for e in events if begin <= e[0] <= finish):
        if kind == "args":
            current = {"args": t}
            engines.append(current)
        elif current is not None and kind not in current:
            current[kind] = t
            if kind == "shutdown":
                current = None
    if not engines:
        return None
    rows = []
    for engine in engines:
        ready = engine.get("ready")
        row = {"before_s": engine["args"] - since,
               "process_s": engine["process"] - engine["args"] if "process" in engine else None,
               "init_s": ready - engine.get("process", engine["args"]) if ready else None,
               "serving_s": engine.get("shutdown", finish) - ready if ready else None}
        rows.append({k: None if v is None else round(v, 1) for k, v in row.items()})
        since = engine.get("shutdown", finish)
    startup = sum(r["before_s"] + (r["process_s"] or 0) + (r["init_s"] or 0) for r in rows)
    return {"engines": rows, "startup_s": round(startup, 1),
            "serving_s": round(sum(r["serving_s"] or 0 for r in rows), 1)}


def carry_over(earlier: dict, current: dict) -> dict:
    """Stages this call skipped (unchanged since the earlier call) keep the earlier call's finished measurement, in
    DAG order: the earlier call's stages first, then this call's new ones."""
    merged = {}
    for name, stage in earlier.items():
        if stage.get("finished") and current.get(name, {"skipped": True}).get("skipped"):
            merged[name] = {**stage, "measured_in": "previous call"}
    for name, stage in current.items():
        if name not in merged:
            merged[name] = stage
    return merged


def save_state(result: dict) -> None:
    """Keep this call's result and DVC's lock file in STATE_DIR (git-ignored, so it stays on the box between calls)."""
    from ftllm.io import atomic_path, write_json

    if (ROOT / "dvc.lock").exists():
        with atomic_path(STATE_DIR / "dvc.lock") as tmp:
            shutil.copyfile(ROOT / "dvc.lock", tmp)
    write_json(STATE_DIR / "result.json", result)


def resume_state() -> dict:
    """The last call's result, with its dvc.lock put back.

    Each call sends the working tree again, and of what a call left on the box only git-ignored files survive that.
    dvc.lock is not ignored (it is meant to be committed), so the lock the last call wrote is gone. DVC's run cache
    cannot stand in for it: it skips stages with persistent outputs (cpt, sft and rl keep their checkpoints), so
    without the lock they would run again.
    """
    saved = STATE_DIR / "result.json"
    if not saved.exists():
        raise click.UsageError(f"--continue: no earlier call's state in {STATE_DIR} (a fresh box starts without it)")
    if (STATE_DIR / "dvc.lock").exists():
        shutil.copyfile(STATE_DIR / "dvc.lock", ROOT / "dvc.lock")
    return json.loads(saved.read_text(encoding="utf-8"))


def ensure_git() -> None:
    """A git repository for `dvc exp`: the checkout's own, or one made here from the tree as it is now.

    A repository made here by an earlier call is made again: the tree was sent anew since, and a call stopped at its
    deadline kills `dvc exp run` mid-way, leaving the index half stashed ("Stash apply resulted in merge conflicts"
    on the H200) and DVC's lock files held by a process that is gone.
    """
    made_here = STATE_DIR / "git-made-here"
    if made_here.exists():
        for stale in (ROOT / ".git", ROOT / ".dvc" / "tmp" / "exps", ROOT / ".dvc" / "tmp" / "rwlock",
                      ROOT / ".dvc" / "tmp" / "lock"):  # fmt: skip
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink(missing_ok=True)
    elif subprocess.run(["git", "rev-parse", "--git-dir"], cwd=ROOT, capture_output=True).returncode == 0:
        return
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    made_here.touch()
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=rehearsal", "-c", "user.email=r@localhost", "commit", "-qm", "rehearsal"]):
        subprocess.run(cmd, cwd=ROOT, check=True)


def git_index_tree() -> str | None:
    """The git index as a tree object, so that what a killed `dvc exp run` staged can be taken back."""
    done = subprocess.run(["git", "write-tree"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def restore_git_index(tree: str | None) -> None:
    """Put the index back as it was before DVC started; the files themselves are left as they are.

    `dvc exp run` stages params.yaml and dvc.lock while it applies its stash. Killed at a deadline, it left them
    staged, and once the next call's tree was sent (params.yaml as committed, no dvc.lock) the next `dvc exp run`
    failed at once on the H200: "Stash apply resulted in merge conflicts: 1 uncommitted changes exist in the index".
    """
    if tree:
        subprocess.run(["git", "read-tree", tree], cwd=ROOT, capture_output=True)


@click.command()
@click.option("--profile", default="rehearsal", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--log", type=click.Path(path_type=Path), default=None, help="copy of DVC's output, written as it comes")
@click.option("--deadline-s", type=float, default=None,
              help="stop the whole run (every descendant) after this many seconds and still write the result")
@click.option("--continue", "resume", is_flag=True,
              help="go on from the last call on this box that stopped at its deadline: its stages stay done and "
                   "keep that call's measurements (marked measured_in: previous call)")
def main(profile: str, out: Path, log: Path | None, deadline_s: float | None, resume: bool) -> None:
    from ftllm.provenance import provenance

    began = time.monotonic()  # the deadline counts from here: the checks below take seconds on a lent box
    # once, before DVC starts: it imports torch to name the card, which would stall the reading of DVC's lines
    made_by = provenance()
    earlier = resume_state() if resume else None
    ensure_git()
    index_before = git_index_tree()
    sampler = MemorySampler()
    sampler.start()
    start = time.monotonic()
    marks: list[tuple[str, float]] = []
    skipped: list[str] = []
    engine_events: list[tuple[float, str]] = []
    # its own process group, so a deadline reaches DVC, the stage and the stage's vLLM workers alike
    proc = subprocess.Popen(["dvc", "exp", "run", "-S", f"profile={profile}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
    deadline_reached = threading.Event()

    def stop() -> None:
        # first ask each stage for its stacks (ftllm.cli registers SIGUSR1), so the log says where the time went
        for pid in stage_pids(proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGUSR1)
        time.sleep(3)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def report(code) -> dict:
        """The result so far, written at once: a call killed from outside still leaves every finished stage."""
        result = build_result(profile, code, start, time.monotonic(), marks, skipped, engine_events, sampler, earlier,
                              made_by)
        write_result(out, result)
        return result

    def on_deadline() -> None:
        deadline_reached.set()
        stop()

    timer = threading.Timer(max(0.0, deadline_s - (time.monotonic() - began)), on_deadline) if deadline_s else None
    if timer:
        timer.start()
    log_file = log.open("w", encoding="utf-8") if log else None
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            if log_file:
                log_file.write(line)
                log_file.flush()
            if m := STAGE_LINE.search(line):
                marks.append((m.group(1), time.monotonic()))
                report("running")
            elif m := SKIP_LINE.search(line):
                skipped.append(m.group(1))
            else:
                engine_events += [(time.monotonic(), kind) for kind, pattern in ENGINE_LINES.items()
                                  if pattern.search(line)]
        code = proc.wait()
    except KeyboardInterrupt:
        stop()
        proc.wait()
        code = "interrupted"
    finally:
        if timer:
            timer.cancel()
        if log_file:
            log_file.close()
    # a DVC that exits 0 in the stop's grace (after the stack dumps, before the kill) has finished the DAG
    cut = deadline_reached.is_set() and code != 0
    if cut or code == "interrupted":
        restore_git_index(index_before)
    if cut:
        code = f"deadline of {deadline_s:.0f} s reached"
    sampler.stopped.set()
    result = report(code)
    click.echo(json.dumps({k: v for k, v in result.items() if k != "stages"}))
    for name, s in result["stages"].items():
        click.echo(f"{name:20s} {s}")
    if code != 0:
        sys.exit(code if isinstance(code, int) else 1)


def build_result(profile: str, code, start: float, end: float, marks: list[tuple[str, float]], skipped: list[str],
                 engine_events: list[tuple[float, str]], sampler: MemorySampler, earlier: dict | None,
                 made_by: dict) -> dict:
    """Per-stage figures from the stage marks so far; a stage is finished once the next began (or DVC exited 0)."""
    stages = {}
    for i, (name, begin) in enumerate(marks):
        finish = marks[i + 1][1] if i + 1 < len(marks) else end
        metrics = stage_metrics(name)
        tokens, field = stage_tokens(metrics)
        wall = finish - begin
        stages[name] = {"wall_s": round(wall, 1), "finished": i + 1 < len(marks) or code == 0,
                        "peak_gpu_mem_gib": sampler.peak(begin, finish),
                        "tokens": tokens, "tokens_field": field,
                        "tokens_per_s": round(tokens / wall, 1) if tokens else None}
        if phases := engine_phases(engine_events, begin, finish):
            stages[name]["vllm"] = phases
        # the finished stage's metrics go in the result itself: a lent box sends back only so many files
        if stages[name]["finished"] and metrics:
            stages[name]["metrics"] = metrics
    for name in skipped:
        stages.setdefault(name, {"skipped": True})
    if earlier:
        stages = carry_over(earlier["stages"], stages)
    result = {"benchmark": "rehearsal", "profile": profile, "exit_code": code, "total_s": round(end - start, 1),
              "dag_s": round(sum(s["wall_s"] for s in stages.values() if s.get("finished")), 1),
              "stages": stages, **made_by, "vllm": installed_version("vllm")}
    if earlier:
        result["previous_calls"] = [*earlier.get("previous_calls", []),
                                    {k: earlier.get(k) for k in ("date", "command", "code", "exit_code", "total_s")}]
    return result


def installed_version(package: str) -> str | None:
    """From the package's metadata: importing vLLM to ask takes 10-15 s on a lent box, past a deadline's slack."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_result(out: Path, result: dict) -> None:
    from ftllm.io import write_json

    write_json(out, result)
    save_state(result)


if __name__ == "__main__":
    main()
