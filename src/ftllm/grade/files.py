"""The official grader's file rules (grader.md §1, §2.1-2.2): what it reads, skips, and aborts on.

- Gold rows need `id, problem, solution, category, unit` (`difficulty`, `evaluation_method` optional);
  prediction rows need `id, output` and may carry only the gold keys besides. A line that is not JSON,
  lacks a required field or has any other key is skipped with a log line (a skipped prediction is missing).
- A repeated id overwrites the earlier line; ids match by JSON value (`3` and `"3"` differ).
- Where the official tool aborts the whole run (a null `output`, an unknown `evaluation_method`), `check_row`
  raises `InputError` naming the file and line.

    gold = read_rows(gold_path, "gold"); preds = read_rows(pred_path, "prediction")
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ftllm.grade import METHODS
from ftllm.io import InputError

log = logging.getLogger(__name__)

GOLD_REQUIRED = ("id", "problem", "solution", "category", "unit")
GOLD_OPTIONAL = ("difficulty", "evaluation_method")
PREDICTION_REQUIRED = ("id", "output")
PREDICTION_KEYS = frozenset(GOLD_REQUIRED + GOLD_OPTIONAL + PREDICTION_REQUIRED)


class Row(dict):
    """A row read from a file, remembering where it came from (for one-line errors)."""

    path: Path
    line: int


def read_rows(path: str | Path, kind: str) -> dict:
    """id -> row for `kind` "gold" or "prediction", in file order, skipping lines as the grader does."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    required = GOLD_REQUIRED if kind == "gold" else PREDICTION_REQUIRED
    rows: dict = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            reason = None
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                data, reason = None, f"not JSON ({err.msg})"
            if reason is None and not isinstance(data, dict):
                reason = f"not a JSON object ({type(data).__name__})"
            if reason is None:
                missing = [k for k in required if k not in data]
                extra = sorted(k for k in data if k not in PREDICTION_KEYS) if kind == "prediction" else []
                if missing:
                    reason = f"missing {', '.join(missing)}"
                elif extra:
                    reason = f"unknown key(s) {', '.join(extra)}"
            if reason:
                log.warning("%s:%d: %s row skipped: %s", path, lineno, kind, reason)
                continue
            try:
                hash(data["id"])
            except TypeError:
                raise InputError(f"{path}:{lineno}: id must be a JSON string or number, got {data['id']!r}") from None
            row = Row(data)
            row.path, row.line = path, lineno
            rows[data["id"]] = row  # a repeated id overwrites (keeping the first one's place, as a dict does)
    return rows


def check_row(pred: Row, gold: Row) -> None:
    """The official tool aborts the whole run on these: stop with one line naming the file and line."""
    method = gold.get("evaluation_method")
    if method is not None and method not in METHODS:
        raise InputError(f"{gold.path}:{gold.line}: evaluation_method must be one of {', '.join(METHODS)} "
                         f"or null, got {method!r} (the official grader aborts the run)")
    if not isinstance(pred["output"], str):
        raise InputError(f"{pred.path}:{pred.line}: output must be a string, got "
                         f"{'null' if pred['output'] is None else type(pred['output']).__name__} "
                         "(the official grader aborts the run)")


def prediction_row(row: dict, output: str) -> dict:
    """A prediction row the grader reads: the input's gold-format keys plus `output`, nothing else."""
    out = {k: v for k, v in row.items() if k in PREDICTION_KEYS and k != "output"}
    out["output"] = output
    return out
