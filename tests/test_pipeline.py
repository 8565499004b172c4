"""The whole DAG under `dvc repro` on the tiny model: runs end to end, reruns nothing, and
reruns exactly the changed stage and what depends on it.

The teacher/judge is a local OpenAI-compatible server (the `http` engine backend) that
answers every request with one of a few well-formed teacher replies; a random tiny model
writes text no parser accepts, and the stages after `judge` need rows. Every other stage
(cpt, upscale, sft, rl, predict, evaluate) runs the real tiny model.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

TEACHER_TEXTS = [
    ("りんごが 12 個、みかんが 30 個あります。果物は全部で何個ですか。", "12 + 30 = 42 より、果物は 42 個である。",
     "42"),
    ("方程式 $2x + 6 = 20$ を解きなさい。", "両辺から 6 を引いて $2x = 14$、両辺を 2 で割って $x = 7$。", "7"),
    ("1 辺が 9 cm の正方形の面積を求めなさい。", "面積は 1 辺の 2 乗なので $9^2 = 81$ 平方センチメートル。", "81"),
    ("硬貨を 3 回投げるとき、表がちょうど 1 回出る確率を求めなさい。",
     "全部で 8 通り、表が 1 回は 3 通りなので確率は $\\frac{3}{8}$。", "\\frac{3}{8}"),
    ("等差数列 5, 8, 11, ... の第 10 項を求めなさい。", "初項 5、公差 3 なので第 10 項は $5 + 9 \\times 3 = 32$。",
     "32"),
    ("関数 $f(x) = x^2$ の $x = 4$ における微分係数を求めなさい。", "$f'(x) = 2x$ なので $f'(4) = 8$。", "8"),
    ("異なる 6 冊の本から 2 冊を選ぶ方法は何通りですか。", "組合せの数は ${}_6C_2 = 15$ 通り。", "15"),
    ("$\\log_{3} 81$ の値を求めなさい。", "$81 = 3^4$ なので値は 4 である。", "4"),
]
REPLIES = [
    f"<problem>{problem}</problem><solution>{solution}</solution><answer>{answer}</answer>\n"
    '{"verdict": "consistent", "reason": "the solution reaches the answer"}'
    for problem, solution, answer in TEACHER_TEXTS
]


class _TeacherHandler(BaseHTTPRequestHandler):
    counter = itertools.count()

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        choices = []
        for i in range(body.get("n", 1)):
            text = REPLIES[next(self.counter) % len(REPLIES)]
            choices.append({"index": i, "text": text, "finish_reason": "stop",
                            "logprobs": {"tokens": list(text[:20]), "token_logprobs": [-0.1] * 20}})
        data = json.dumps({"choices": choices}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def teacher_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TeacherHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def _copy_project(dest: Path) -> None:
    """The project's own files (tracked and new, not ignored), as a fresh clone would have them."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.split("\n")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    # a clone has a commit; DVCLive (training stages' logger) asks git for it
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(["git", *identity, "commit", "-q", "-m", "project"], cwd=dest, check=True)


def _repro(project: Path, env: dict) -> list[str]:
    """Run `dvc repro`; return the names of the stages it ran."""
    result = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=project, env=env, capture_output=True,
                            text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return re.findall(r"Running stage '([^']+)'", result.stdout)


@pytest.mark.slow
def test_dvc_repro_runs_once_then_nothing_then_only_downstream(tmp_path, tiny_model, teacher_url):
    from ftllm.profiles import compose, write_params

    project = tmp_path / "project"
    project.mkdir()
    _copy_project(project)
    overrides = [
        f"++base.model={tiny_model}",
        f"++baseline.model={tiny_model}",
        f"++teacher.model={tiny_model}",
        f"++generate.teacher.base_url={teacher_url}",
        f"++judge.engine.base_url={teacher_url}",
    ]
    write_params(compose("test", overrides, conf_dir=project / "conf"), project / "params.yaml")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(project / "src")}

    ran = _repro(project, env)
    expected = {"base", "baseline", "teacher", "evalset", "generate", "judge", "cpt", "upscale", "sft", "rl",
                "predict@base", "predict@final", "evaluate@base", "evaluate@final"}
    assert set(ran) == expected
    predictions = [json.loads(line) for line in (project / "predictions/final/predictions.jsonl").open()]
    assert predictions and all("output" in row and "problem" in row for row in predictions)
    metrics = json.loads((project / "metrics/evaluate-final.json").read_text())
    assert "accuracy" in json.dumps(metrics)

    assert _repro(project, env) == [], "a second repro must run nothing"

    params = yaml.safe_load((project / "params.yaml").read_text())
    # a change that must alter the grown weights (a tiny reg change can leave a near-uniform plan unchanged,
    # and DVC then rightly skips everything downstream of an identical output)
    params["upscale"]["fusion"] = "average" if params["upscale"]["fusion"] == "ot" else "ot"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    assert set(_repro(project, env)) == {"upscale", "sft", "rl", "predict@final", "evaluate@final"}
