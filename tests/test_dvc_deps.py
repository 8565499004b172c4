"""dvc.yaml's deps hold every stage script's import closure, and editing a module reruns exactly its importers."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ftllm.dvc_deps import Closure, folded, missing, stages

ROOT = Path(__file__).resolve().parents[1]


def test_every_stage_lists_its_import_closure():
    gaps = missing(ROOT)
    assert not gaps, "dvc.yaml misses imported files (python -m ftllm.dvc_deps --suggest):\n" + "\n".join(
        f"  {stage}: {', '.join(files)}" for stage, files in gaps.items())


def _write(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_closure_follows_every_kind_of_import(tmp_path):
    src = tmp_path / "src" / "ftllm"
    files = {name: _write(src / name, text) for name, text in {
        "__init__.py": "",
        "a/__init__.py": "",
        "a/top.py": "from . import sib\nfrom .deep import thing\n",
        "a/sib.py": "def f():\n    from ftllm.b import sub\n",  # function-level; `sub` is a submodule
        "a/deep/__init__.py": "thing = 1\n",
        "b/__init__.py": "",
        "b/sub.py": "CALL = 'ftllm.c.lazy:run'\n",  # imported by name at run time
        "c/__init__.py": "",
        "c/lazy.py": "import json\n",
        "c/unused.py": "",
        "config.py": "SECTIONS = {'x': 'ftllm.c.unused:Config'}\n",
    }.items()}
    script = _write(tmp_path / "stages" / "s.py", "import ftllm.a.top\n")
    found = Closure(tmp_path / "src").of(script)
    expected = {"__init__.py", "a/__init__.py", "a/top.py", "a/sib.py", "a/deep/__init__.py", "b/__init__.py",
                "b/sub.py", "c/__init__.py", "c/lazy.py"}
    assert found == {files[name] for name in expected}
    # the section table is followed only for the sections a stage reads
    with_section = Closure(tmp_path / "src").of(script, ["x"])
    assert with_section - found == {files["c/unused.py"]}
    names = ("__init__.py", "a", "b", "c/__init__.py", "c/lazy.py")
    assert folded(tmp_path, found) == [f"src/ftllm/{n}" for n in names]


def test_missing_names_the_stage_and_the_file(tmp_path):
    _write(tmp_path / "src" / "ftllm" / "__init__.py")
    _write(tmp_path / "src" / "ftllm" / "used.py")
    _write(tmp_path / "src" / "ftllm" / "config.py", "SECTIONS = {}\n")
    _write(tmp_path / "stages" / "s.py", "from ftllm import used\n")
    _write(tmp_path / "dvc.yaml", yaml.safe_dump({"stages": {
        "ok": {"cmd": "python stages/s.py", "deps": ["stages/s.py", "src/ftllm"]},
        "short": {"cmd": "python stages/s.py --x 1", "deps": ["stages/s.py", "src/ftllm/__init__.py"]},
    }}))
    assert missing(tmp_path) == {"short": ["src/ftllm/used.py"]}
    cli = subprocess.run([sys.executable, "-m", "ftllm.dvc_deps", str(tmp_path)], capture_output=True, text=True)
    assert cli.returncode == 1 and cli.stdout.strip() == "short: missing src/ftllm/used.py"


def _expand(stage_name: str, body: dict) -> list[tuple[str, dict]]:
    """A stage, or each generated stage of a `foreach`, with ${item}/${key} substituted."""
    if "foreach" not in body:
        return [(stage_name, body)]
    items = body["foreach"]
    pairs = items.items() if isinstance(items, dict) else [(None, v) for v in items]
    text = yaml.safe_dump(body["do"])
    return [(f"{stage_name}@{key if key is not None else item}",
             yaml.safe_load(text.replace("${item}", str(item)).replace("${key}", str(key))))
            for key, item in pairs]


def _paths(entries) -> list[str]:
    return [e if isinstance(e, str) else next(iter(e)) for e in entries or []]


def _fake_project(dest: Path) -> dict[str, dict]:
    """The repo's stages, library and params, with every data/model dep and output as a placeholder file."""
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, dest / name)
    for folder in ("src", "stages", "assets", "conf"):
        if (ROOT / folder).exists():
            shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    expanded = {}
    for name, body in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        for full, stage in _expand(name, body):
            expanded[full] = stage
            for path in _paths(stage.get("deps")) + _paths(stage.get("outs")) + _paths(stage.get("metrics")) + \
                    _paths(stage.get("plots")):
                target = dest / path
                if not target.exists():
                    _write(target / "part" if not target.suffix else target, f"{path}\n")
    return expanded


def _dvc(project: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"dvc {' '.join(args)}: {result.stderr[-2000:]}"
    return result.stdout


def test_editing_a_module_reruns_exactly_the_stages_that_import_it(tmp_path):
    project = tmp_path / "repo"
    project.mkdir()
    expanded = _fake_project(project)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    _dvc(project, "init", "-q")
    _dvc(project, "commit", "-f", "-q")  # a dvc.lock from the placeholders: nothing runs
    assert json.loads(_dvc(project, "status", "--json") or "{}") == {}

    closure = Closure(project / "src")
    scripts = stages(project / "dvc.yaml")
    for module in ("src/ftllm/train/trainer.py", "src/ftllm/grade/compare.py", "src/ftllm/config.py"):
        path = project / module
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        changed = set(json.loads(_dvc(project, "status", "--json")))
        path.write_bytes(original)
        importers = {name for name, stage in expanded.items()
                     if path.resolve() in closure.of(project / scripts[name.split("@")[0]]["script"],
                                                     _paths(stage.get("params")))}
        assert changed == importers and importers, (module, sorted(changed))
    assert json.loads(_dvc(project, "status", "--json") or "{}") == {}
