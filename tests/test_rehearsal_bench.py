"""benchmarks/rehearsal.py's bookkeeping: DVC's lines, and a run continued over two calls on one box."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import rehearsal  # noqa: E402
import summarize  # noqa: E402


def test_dvc_lines_mark_running_and_skipped_stages():
    assert rehearsal.STAGE_LINE.search("Running stage 'predict@base':").group(1) == "predict@base"
    for line in ("Stage 'judge' didn't change, skipping",
                 "Stage 'judge' is cached - skipping run, checking out outputs"):
        assert rehearsal.SKIP_LINE.search(line).group(1) == "judge"


def test_a_continued_run_keeps_the_first_calls_finished_stages_in_dag_order():
    earlier = {"base": {"wall_s": 36.0, "finished": True}, "generate": {"wall_s": 129.0, "finished": True},
               "cpt": {"wall_s": 15.0, "finished": False}}  # fmt: skip
    current = {"base": {"skipped": True}, "generate": {"skipped": True}, "cpt": {"wall_s": 40.0, "finished": True},
               "sft": {"wall_s": 50.0, "finished": True}}  # fmt: skip
    merged = rehearsal.carry_over(earlier, current)
    assert list(merged) == ["base", "generate", "cpt", "sft"]
    assert merged["base"] == {"wall_s": 36.0, "finished": True, "measured_in": "previous call"}
    assert merged["cpt"] == {"wall_s": 40.0, "finished": True}  # the stage the deadline cut is this call's
    # a stage this call ran again is never replaced by the earlier measurement
    assert rehearsal.carry_over({"base": {"wall_s": 1.0, "finished": True}},
                                {"base": {"wall_s": 2.0, "finished": True}})["base"]["wall_s"] == 2.0


def test_continue_puts_back_the_lock_the_last_call_wrote(tmp_path, monkeypatch):
    monkeypatch.setattr(rehearsal, "ROOT", tmp_path)
    monkeypatch.setattr(rehearsal, "STATE_DIR", tmp_path / ".rehearsal")
    with pytest.raises(click.UsageError, match="no earlier call's state"):
        rehearsal.resume_state()
    (tmp_path / "dvc.lock").write_text("stages: {cpt: finished-on-the-box}\n")
    rehearsal.save_state({"stages": {"cpt": {"wall_s": 60.0, "finished": True}}})
    # the next call arrives with the tracked dvc.lock sent again, which knows nothing of the box's stages
    (tmp_path / "dvc.lock").write_text("stages: {cpt: from-the-checkout}\n")
    earlier = rehearsal.resume_state()
    assert earlier["stages"]["cpt"]["finished"]
    assert (tmp_path / "dvc.lock").read_text() == "stages: {cpt: finished-on-the-box}\n"


def test_a_repository_made_for_an_earlier_call_is_made_again_from_the_tree(tmp_path, monkeypatch):
    """On the H200 a call stopped at its deadline killed `dvc exp run` mid-stash; the next call's `dvc exp run` then
    failed at once on the half-stashed index. A repository this script made is rebuilt from the tree each call;
    a checkout's own repository is never touched."""
    import subprocess

    monkeypatch.setattr(rehearsal, "ROOT", tmp_path)
    monkeypatch.setattr(rehearsal, "STATE_DIR", tmp_path / ".rehearsal")

    def git(*args, cwd=tmp_path):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout

    (tmp_path / "params.yaml").write_text("profile: demo\n")
    rehearsal.ensure_git()  # a bare copy: a repository is made
    assert git("log", "--format=%s") == "rehearsal\n"
    (tmp_path / "params.yaml").write_text("profile: rehearsal\n")
    git("add", "params.yaml")  # what the killed run left behind: a staged change, and DVC's locks
    (tmp_path / ".dvc" / "tmp" / "exps").mkdir(parents=True)
    (tmp_path / ".dvc" / "tmp" / "rwlock").write_text("{}")
    rehearsal.ensure_git()
    assert git("status", "--porcelain") == ""  # the tree as it is now, committed, nothing staged
    assert git("show", "HEAD:params.yaml") == "profile: rehearsal\n"
    assert not (tmp_path / ".dvc" / "tmp" / "rwlock").exists() and not (tmp_path / ".dvc" / "tmp" / "exps").exists()

    own = tmp_path / "checkout"  # a developer's checkout keeps its history and its staged work
    own.mkdir()
    monkeypatch.setattr(rehearsal, "ROOT", own)
    monkeypatch.setattr(rehearsal, "STATE_DIR", own / ".rehearsal")
    git("init", "-q", cwd=own)
    (own / "work.txt").write_text("mine\n")
    git("add", "work.txt", cwd=own)
    rehearsal.ensure_git()
    assert git("status", "--porcelain", cwd=own) == "A  work.txt\n"


def test_a_stage_reads_its_own_metrics_file(tmp_path, monkeypatch):
    monkeypatch.setattr(rehearsal, "ROOT", tmp_path)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "predict-final.json").write_text('{"tokens": 250389, "phases_s": {"generate": 19.1}}')
    (tmp_path / "metrics" / "cpt.json").write_text('{"tokens_seen": 40960}')
    assert rehearsal.stage_metrics("predict@final")["phases_s"] == {"generate": 19.1}
    assert rehearsal.stage_tokens(rehearsal.stage_metrics("predict@final")) == (250389, "tokens")
    assert rehearsal.stage_tokens(rehearsal.stage_metrics("cpt")) == (40960, "tokens_seen")
    assert rehearsal.stage_metrics("predict@base") == {}
    assert rehearsal.stage_tokens(rehearsal.stage_metrics("upscale")) == (None, None)


def test_engine_phases_split_start_up_from_serving_per_engine():
    lines = [  # as vLLM 0.26 printed them in the H200 rehearsal, one engine after another, the second cut off
        (10.0, "INFO 12-03 06:46:34 [api_utils.py:273] non-default args: {'dtype': 'bfloat16'}"),
        (30.0, "(EngineCore pid=1576) INFO 12-03 06:46:54 [core.py:116] Initializing a V1 LLM engine (v0.26.0)"),
        (65.0, "(EngineCore pid=1576) INFO 12-03 06:47:29 [core.py:340] init engine (profile, create kv cache, "
               "warmup model) took 30.79 s (compilation: 4.23 s)"),
        (83.0, "INFO 12-03 06:47:47 [core_client.py:655] [shutdown] MPClient: start timeout=default"),
        (84.0, "INFO 12-03 06:47:51 [core_client.py:662] [shutdown] MPClient: complete"),
        (90.0, "INFO 12-03 06:50:51 [api_utils.py:273] non-default args: {'seed': 42}"),
        (99.0, "(EngineCore pid=2569) INFO 12-03 06:51:09 [core.py:116] Initializing a V1 LLM engine (v0.26.0)"),
    ]
    events = [(t, kind) for t, line in lines for kind, pattern in rehearsal.ENGINE_LINES.items()
              if pattern.search(line)]  # fmt: skip
    assert [kind for _, kind in events] == ["args", "process", "ready", "shutdown", "shutdown", "args", "process"]
    phases = rehearsal.engine_phases(events + [(500.0, "args")], begin=0.0, finish=120.0)  # a later stage's engine
    assert phases["engines"] == [
        {"before_s": 10.0, "process_s": 20.0, "init_s": 35.0, "serving_s": 18.0},
        {"before_s": 7.0, "process_s": 9.0, "init_s": None, "serving_s": None},  # never ready: all start-up
    ]
    assert phases["startup_s"] == 10 + 20 + 35 + 7 + 9 and phases["serving_s"] == 18.0
    assert rehearsal.engine_phases(events, begin=200.0, finish=300.0) is None  # a stage without an engine


def test_benchmarks_table_tells_a_deadline_from_a_failure_and_sums_engine_start_up():
    stages = {"judge": {"wall_s": 105.0, "finished": True, "vllm": {"startup_s": 83.5, "serving_s": 18.0}},
              "rl": {"wall_s": 41.0, "finished": False, "vllm": {"startup_s": 41.0, "serving_s": 0.0}}}  # fmt: skip
    figure, _, met = summarize.rehearsal({"stages": stages, "exit_code": "deadline of 535 s reached", "dag_s": 105.0})
    assert "rl 41 s (cut by the deadline)" in figure and figure.endswith("stopped at rl (deadline)")
    assert "vLLM engines 124 s starting, 18 s serving" in figure and met is False
    figure, _, _ = summarize.rehearsal({"stages": stages, "exit_code": 1})
    assert "rl 41 s (failed)" in figure and figure.endswith("stopped at rl")


FAKE_DVC = """#!/bin/sh
echo "Running stage 'base':"
sleep 0.3
echo "Running stage 'generate':"
echo "profile: rehearsal" > params.yaml && echo "stages: {}" > dvc.lock && git add params.yaml dvc.lock
until grep -qs '"generate"' "$REHEARSAL_OUT"; do sleep 0.1; done
cp "$REHEARSAL_OUT" "$REHEARSAL_OUT.mid-run"
exec sleep 60
"""


def _repo_with_fake_dvc(tmp_path: Path, monkeypatch, script: str) -> Path:
    """A git repository for the driver to run in, with `script` as the `dvc` on PATH."""
    import subprocess

    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dvc").write_text(script)
    (bin_dir / "dvc").chmod(0o755)
    monkeypatch.setattr(rehearsal, "ROOT", root)
    monkeypatch.setattr(rehearsal, "STATE_DIR", root / ".rehearsal")
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    return root


def test_the_result_is_on_disk_from_the_first_finished_stage_and_a_deadline_stops_the_run(tmp_path, monkeypatch):
    """A call killed from outside (its box's time limit) still leaves every stage that finished: the result is
    written at each stage boundary, not only at the end."""
    import subprocess

    root = _repo_with_fake_dvc(tmp_path, monkeypatch, FAKE_DVC)
    (root / "metrics").mkdir()
    (root / "metrics" / "base.json").write_text('{"rows": 3}')
    (root / "params.yaml").write_text("profile: full\n")
    (root / "mine.txt").write_text("staged by its owner\n")
    subprocess.run(["git", "add", "params.yaml", "mine.txt"], cwd=root, check=True)
    out = tmp_path / "out" / "rehearsal.json"
    monkeypatch.setenv("REHEARSAL_OUT", str(out))
    with pytest.raises(SystemExit) as stopped:
        rehearsal.main.main(["--out", str(out), "--deadline-s", "3"], standalone_mode=False)
    assert stopped.value.code == 1
    mid_run = json.loads(Path(f"{out}.mid-run").read_text())
    assert mid_run["exit_code"] == "running"
    assert mid_run["stages"]["base"]["finished"] and mid_run["stages"]["base"]["metrics"] == {"rows": 3}
    assert not mid_run["stages"]["generate"]["finished"]
    assert mid_run["stages"]["base"]["wall_s"] < 1.5  # writing the result does not hold up reading DVC's lines
    final = json.loads(out.read_text())
    assert final["exit_code"] == "deadline of 3 s reached"
    assert final["stages"]["base"]["finished"] and not final["stages"]["generate"]["finished"]
    assert json.loads((root / ".rehearsal" / "result.json").read_text())["exit_code"] == final["exit_code"]
    # what the killed DVC staged is taken back, so the next call's `dvc exp run` does not fail on a half-applied
    # stash; what was staged before it stays staged, and the files keep what DVC wrote
    staged = subprocess.run(["git", "diff", "--cached", "--name-only"], cwd=root, capture_output=True, text=True)
    assert staged.stdout.split() == ["mine.txt", "params.yaml"]
    shown = subprocess.run(["git", "show", ":params.yaml"], cwd=root, capture_output=True, text=True)
    assert shown.stdout == "profile: full\n" and (root / "params.yaml").read_text() == "profile: rehearsal\n"


FAKE_DVC_FINISHING_LATE = """#!/bin/sh
echo "Running stage 'base':"
sleep 0.3
echo "Running stage 'evaluate':"
sleep 2
echo "Ran experiment(s): late-but-done"
"""


def test_a_dvc_run_that_exits_0_in_the_deadlines_grace_is_recorded_as_finished(tmp_path, monkeypatch):
    """The deadline first asks for stack dumps and kills 3 s later: a DAG done in between finished, and says so
    (on the H200 a run whose log ended with 'Ran experiment(s)' was recorded as cut by its deadline)."""
    _repo_with_fake_dvc(tmp_path, monkeypatch, FAKE_DVC_FINISHING_LATE)
    out = tmp_path / "rehearsal.json"
    rehearsal.main.main(["--out", str(out), "--deadline-s", "1"], standalone_mode=False)
    final = json.loads(out.read_text())
    assert final["exit_code"] == 0 and final["total_s"] > 1
    assert all(stage["finished"] for stage in final["stages"].values())


def test_ctrl_c_is_recorded_as_an_interruption_not_a_deadline(tmp_path, monkeypatch):
    """Ctrl-C stops DVC the way a deadline does, but the result says which one happened (with no deadline set,
    the driver used to crash formatting one)."""
    import io

    _repo_with_fake_dvc(tmp_path, monkeypatch, FAKE_DVC_FINISHING_LATE)
    out = tmp_path / "rehearsal.json"

    class CtrlCOnFirstLine(io.StringIO):
        def write(self, text):
            if not self.getvalue():
                super().write(text)
                raise KeyboardInterrupt
            return super().write(text)

    monkeypatch.setattr(rehearsal.sys, "stdout", CtrlCOnFirstLine())
    with pytest.raises(SystemExit) as stopped:
        rehearsal.main.main(["--out", str(out)], standalone_mode=False)
    assert stopped.value.code == 1
    assert json.loads(out.read_text())["exit_code"] == "interrupted"
