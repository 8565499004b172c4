import json

import pytest

from ftllm.io import InputError, atomic_path, read_jsonl, read_records, write_jsonl, write_parquet


def test_roundtrip_jsonl_and_parquet(tmp_path):
    rows = [{"id": "a", "x": 1, "tags": ["p", "q"]}, {"id": "b", "x": 2, "tags": []}]
    write_jsonl(tmp_path / "r.jsonl", rows)
    assert read_jsonl(tmp_path / "r.jsonl") == rows
    write_parquet(tmp_path / "r.parquet", rows)
    back = read_records(tmp_path / "r.parquet")
    assert [r["id"] for r in back] == ["a", "b"] and json.loads(back[0]["tags"]) == ["p", "q"]


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1}\n{"id": 2\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:2: malformed JSON"):
        read_jsonl(path)


def test_missing_field_names_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 1, "problem": "x"}\n{"id": 2}\n')
    with pytest.raises(InputError, match=r"p\.jsonl:2: missing required field\(s\) problem"):
        read_jsonl(path, required=["id", "problem"])


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_jsonl(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="file is empty"):
        read_jsonl(tmp_path / "empty.jsonl")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    write_jsonl(target, [{"a": 1}])
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert read_jsonl(target) == [{"a": 1}], "old content must survive a failed write"
    assert not (tmp_path / "out.jsonl.tmp").exists()


def test_atomic_path_replaces_folders(tmp_path):
    target = tmp_path / "ckpt"
    for content in ("first", "second"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "w").write_text(content)
    assert (target / "w").read_text() == "second"
