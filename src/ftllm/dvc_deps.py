"""Check that every stage in `dvc.yaml` lists each library file its script can import.

DVC reruns a stage only when a declared dependency changes, so a stage whose `deps` miss a module it
imports is silently reported up to date after that module is edited. This walks each stage script's
static import closure inside `src/` and reports the files no dependency covers (a listed folder
covers everything below it):

    python -m ftllm.dvc_deps            # missing files per stage; exit 1 when any
    python -m ftllm.dvc_deps --suggest  # each stage's closure, folded into folders where a whole folder is used

What counts as an import: `import a.b` and `from a import b` anywhere in a module (inside functions
too), relative imports, parent packages (`a/__init__.py` runs before `a/b.py`), a submodule named in
`from a import b`, and string literals of the form "ftllm.module:attr" or "ftllm.module" (imported
lazily by name: the harness's `call`, the strategy registry). `config.SECTIONS` maps every params
section to its module; a stage loads only the sections dvc.yaml gives it under `params`, so that table
is followed per stage instead of as a whole.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import yaml

PACKAGE = "ftllm"
SECTION_TABLE = ("ftllm.config", "SECTIONS")  # module, name of its dict: params section -> "module:Class"
_BY_NAME = re.compile(rf"^{PACKAGE}(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?$")
_SCRIPT = re.compile(r"\b(stages/[\w/]+\.py)\b")


class Closure:
    """Import closure of files inside `src/`, with the parsed modules cached."""

    def __init__(self, src: Path):
        self.src = Path(src)
        self._imports: dict[Path, set[str]] = {}

    def module_file(self, name: str) -> Path | None:
        """`ftllm.a.b` -> src/ftllm/a/b.py or src/ftllm/a/b/__init__.py (None outside src/)."""
        base = self.src.joinpath(*name.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def module_name(self, path: Path) -> str:
        parts = path.relative_to(self.src).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def _files_for(self, name: str) -> list[Path]:
        """A module and every parent package that importing it runs."""
        parts = name.split(".")
        files = [self.module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)]
        return [f for f in files if f is not None]

    def imported_names(self, path: Path) -> set[str]:
        """Dotted module names `path` may import (resolved; only those under src/ matter later)."""
        if path in self._imports:
            return self._imports[path]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        inside = path.is_relative_to(self.src)
        package = self.module_name(path) if inside else ""
        if inside and path.name != "__init__.py":
            package = package.rpartition(".")[0]
        skip = self._section_table_strings(tree) if inside and self.module_name(path) == SECTION_TABLE[0] else set()
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    if not inside:
                        continue
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    base = node.module
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in node.names)  # kept only if a submodule
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
                  and _BY_NAME.match(node.value)):
                names.add(node.value.partition(":")[0])
        self._imports[path] = names
        return names

    @staticmethod
    def _section_table_strings(tree: ast.Module) -> set[int]:
        for node in tree.body:
            target = node.target if isinstance(node, ast.AnnAssign) else (
                node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
            if isinstance(target, ast.Name) and target.id == SECTION_TABLE[1] and isinstance(node.value, ast.Dict):
                return {id(v) for v in node.value.values}
        return set()

    def section_modules(self) -> dict[str, str]:
        path = self.module_file(SECTION_TABLE[0])
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            target = node.target if isinstance(node, ast.AnnAssign) else (
                node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
            if isinstance(target, ast.Name) and target.id == SECTION_TABLE[1]:
                table = ast.literal_eval(node.value)
                return {section: spec.partition(":")[0] for section, spec in table.items()}
        raise ValueError(f"{path}: no {SECTION_TABLE[1]} table")

    def of(self, script: Path, sections: list[str] = ()) -> set[Path]:
        """Files under src/ that running `script` (reading `sections` of params) may import."""
        table = self.section_modules() if sections else {}
        todo = [script] + [f for s in sections if s in table for f in self._files_for(table[s])]
        seen: set[Path] = set()
        while todo:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            for name in self.imported_names(path):
                if name.split(".")[0] == PACKAGE:
                    todo.extend(self._files_for(name))
        return {p for p in seen if p.is_relative_to(self.src)}


def stages(dvc_yaml: Path) -> dict[str, dict]:
    """Stage name -> {script, deps, params} from dvc.yaml (a `foreach` stage's deps come from its `do`)."""
    data = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}
    found = {}
    for name, stage in (data.get("stages") or {}).items():
        body = stage.get("do", stage)
        match = _SCRIPT.search(str(body.get("cmd", "")))
        if not match:
            continue
        deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]
        params = [p if isinstance(p, str) else next(iter(p)) for p in body.get("params", [])]
        found[name] = {"script": match.group(1), "deps": deps, "params": [p for p in params if "." not in p] +
                       [p.split(".")[0] for p in params if "." in p]}
    return found


def missing(root: Path) -> dict[str, list[str]]:
    """Stage -> files (relative to root) its script can import that no dependency in dvc.yaml covers."""
    root = Path(root).resolve()
    closure = Closure(root / "src")
    result = {}
    for name, stage in stages(root / "dvc.yaml").items():
        deps = [(root / d).resolve() for d in stage["deps"]]
        needed = closure.of(root / stage["script"], stage["params"]) | {root / stage["script"]}
        uncovered = sorted(str(p.relative_to(root)) for p in needed
                           if not any(p == d or p.is_relative_to(d) for d in deps))
        if uncovered:
            result[name] = uncovered
    return result


def folded(root: Path, files: set[Path]) -> list[str]:
    """`files`, with every folder whose .py files are all included written as the folder."""
    root = Path(root).resolve()
    out: set[Path] = set(files)
    folders = sorted({f.parent for f in files}, key=lambda p: len(p.parts))
    for folder in folders:
        if folder.name == "src" or folder == root / "src" / PACKAGE:
            continue
        everything = set(folder.rglob("*.py"))
        if everything and everything <= files:
            out = {p for p in out if not p.is_relative_to(folder)} | {folder}
    reduced = {p for p in out if not any(p != q and p.is_relative_to(q) for q in out)}
    return sorted(str(p.relative_to(root)) for p in reduced)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftllm.dvc_deps", description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=".", type=Path, help="repository root (dvc.yaml, src/)")
    parser.add_argument("--suggest", action="store_true", help="print each stage's closure as deps")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not (root / "dvc.yaml").is_file():
        print(f"{root / 'dvc.yaml'}: not found", file=sys.stderr)
        return 2
    if args.suggest:
        closure = Closure(root / "src")
        for name, stage in stages(root / "dvc.yaml").items():
            files = closure.of(root / stage["script"], stage["params"])
            print(f"{name}: [{', '.join([stage['script'], *folded(root, files)])}]")
        return 0
    gaps = missing(root)
    for name, files in gaps.items():
        print(f"{name}: missing {', '.join(files)}")
    if not gaps:
        print("dvc.yaml: every stage lists its script's import closure")
    return 1 if gaps else 0


if __name__ == "__main__":
    sys.exit(main())
