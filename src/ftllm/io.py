"""Reading and writing records: JSONL and Parquet, with file:line errors and atomic writes.

Every stage writes through this module so that a crash never leaves a file or a
folder that looks complete: data goes to a temporary unique to the writer first and is
renamed into place only when whole, and two writers of one output never interleave (a lock).
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

# control characters (C0 but tab and newline, DEL, C1): a model's NUL or escape sequence is never part
# of an answer, and a NUL inside \boxed{} would otherwise split what the grader reads
CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def strip_controls(text: str) -> str:
    return CONTROL_CHARACTERS.sub("", text)


class InputError(ValueError):
    """Bad input data. The message is one line that names the file (and line)."""


# JSON types a row's id may have: text or an integer (never a bool, a float, null or a container)
ID_TYPES = (str, int)


def check_row(row: dict, where: str, required: Sequence[str] = (), types: dict | None = None,
              null_is_missing: bool = False) -> None:
    """Raise InputError at `where` (file:line) for a missing field or a field of the wrong JSON type.

    In Parquet every row has every column, so there a null counts as missing (`null_is_missing`).
    """
    missing = [k for k in required if k not in row or null_is_missing and row[k] is None]
    if missing:
        raise InputError(f"{where}: missing required field(s) {', '.join(missing)}")
    for key, allowed in (types or {}).items():
        if key in row and (row[key] is not None or key in required):  # a required field may not be null
            value = row[key]
            if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
                names = " or ".join(t.__name__ for t in allowed)
                raise InputError(f"{where}: field {key} must be {names}, got {type(value).__name__} {value!r:.60}")


def read_jsonl(path: str | Path, required: Sequence[str] = (), allow_empty: bool = False,
               types: dict | None = None, unique: str | None = None) -> list[dict]:
    """Read a JSONL file; every row must be an object holding the `required` fields.

    `types` maps fields to the Python types their JSON values may have; `unique` names a field
    no two rows may share (the error names both lines) and whose values all have one type. Every error
    names the file and line, including bytes that are not UTF-8.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    rows: list[dict] = []
    first_line: dict = {}
    first_kind: tuple[str, int] | None = None
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(f"{path}:{lineno}: not UTF-8 (byte {err.start} of the line)") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{lineno}: malformed JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            check_row(row, f"{path}:{lineno}", required, types)
            if unique is not None and unique in row:
                kind = type(row[unique]).__name__
                if first_kind is None:
                    first_kind = (kind, lineno)
                elif kind != first_kind[0]:
                    # a column of one type: Parquet (samples.parquet) cannot hold a mix
                    raise InputError(f"{path}:{lineno}: {unique} {row[unique]!r} is {kind}, but the {unique} on line "
                                     f"{first_kind[1]} is {first_kind[0]}; use one type for every {unique}")
                key = (kind, row[unique]) if isinstance(row[unique], (str, int)) else None
                if key in first_line:
                    raise InputError(f"{path}:{lineno}: duplicate {unique} {row[unique]!r} "
                                     f"(first on line {first_line[key]})")
                first_line[key] = lineno
            rows.append(row)
    if not rows and not allow_empty:
        raise InputError(f"{path}: file is empty")
    return rows


_HELD: set[str] = set()  # lock files this process holds


class OutputBusy(InputError):
    """Another process is writing the same output right now."""


def _tmp_name(path: Path) -> Path:
    # unique per writer: a second writer never deletes or renames the first one's temporary
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def output_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on writing `path`; a second writer fails at once with OutputBusy.

    The lock is an flock on `.<name>.lock` beside `path`, removed on release (so no lock file is
    left inside an output folder). A kill releases it: the kernel drops the flock with the process.
    """
    path = Path(path)
    lock_path = path.with_name(f".{path.name}.lock")
    key = os.path.abspath(lock_path)
    if key in _HELD:  # re-entered by this process (a stage locks its --out, then writes it atomically)
        yield
        return
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusy(f"{path}: another process is writing this output (lock {lock_path}); "
                             "wait for it or choose another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed that lock file on release: lock the new one
    _HELD.add(key)
    try:
        yield
    finally:
        _HELD.discard(key)
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    Works for files and folders (checkpoints). The output is locked for the whole block (see
    `output_lock`), the temporary's name is unique to this writer, and temporaries that killed
    writers left behind are removed first. A failed block removes its temporary. Readers see the
    old output or the new one, never a half one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(path):
        for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
            _remove(stale)  # we hold the lock, so no live writer owns these
        tmp = _tmp_name(path)
        try:
            yield tmp
        except BaseException:
            _remove(tmp)
            raise
        if path.is_dir() and not path.is_symlink():
            # move the old folder aside first: at no moment is a half-deleted folder at `path`
            old = _tmp_name(path)
            path.replace(old)
            tmp.replace(path)
            _remove(old)
        else:
            tmp.replace(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows atomically; returns the number written."""
    count = 0
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_json(path: str | Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None


def write_parquet(path: str | Path, rows: Sequence[dict]) -> int:
    """Write rows to Parquet atomically. Nested values (lists, dicts) are stored as JSON text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(rows)
    columns: dict[str, list] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, [])
    for key in columns:
        columns[key] = [_flatten(r.get(key)) for r in rows]
    table = pa.table(columns) if rows else pa.table({})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return len(rows)


def _flatten(value):
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return value


def read_parquet(path: str | Path) -> list[dict]:
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise InputError(f"{path}: not a readable Parquet file ({err})") from None


def read_records(path: str | Path, required: Sequence[str] = (), allow_empty: bool = False,
                 types: dict | None = None) -> list[dict]:
    """Read `.jsonl` or `.parquet` (or every such file in a folder, sorted) into rows."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".parquet"))
        rows = [r for p in files for r in read_records(p, required, allow_empty=True, types=types)]
        if not rows and not allow_empty:
            raise InputError(f"{path}: folder holds no rows")
        return rows
    if path.suffix == ".parquet":
        rows = read_parquet(path)
        if not rows and not allow_empty:
            raise InputError(f"{path}: file is empty")
        for i, row in enumerate(rows, start=1):
            check_row(row, f"{path}: row {i}", required, types, null_is_missing=True)
        return rows
    return read_jsonl(path, required, allow_empty, types)


def write_records(path: str | Path, rows: Sequence[dict]) -> int:
    path = Path(path)
    return write_parquet(path, rows) if path.suffix == ".parquet" else write_jsonl(path, rows)


def file_sha256(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
