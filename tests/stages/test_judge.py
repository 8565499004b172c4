"""Stage test: `stages/judge.py` end to end on the tiny random model (hf backend), plus bad input."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "stages"))
import judge as judge_stage  # noqa: E402  (stages/ is a folder of scripts, not a package)


def _row(i: int, problem: str, answer: str = "5", field: str = "algebra") -> dict:
    return {"id": f"g{i}", "field": field, "difficulty": ["easy", "hard"][i % 2], "tool_use": False,
            "sample_index": i, "problem": problem, "reasoning": "考える。",
            "solution": f"与えられた条件から式を立てて整理すると、答えは ${answer}$ である。", "answer": answer,
            "uses_python": False, "raw_text": "", "extra_column": i}


def _problems() -> list[dict]:
    rows = [_row(i, f"ある数に {i + 2} をかけて {3 * i + 1} を足すと {5 * (i + 2) + 3 * i + 1} になる。"
                    "ある数を求めなさい。")
            for i in range(5)]
    rows.append(_row(5, rows[0]["problem"]))                                       # exact duplicate
    rows.append(_row(6, "方程式 $4x + 9 = 33$ を解きなさい。ただし $x$ は実数とする。", "6",
                     "equations"))  # contaminated
    rows.append(_row(7, "Solve for $x$: $2x + 1 = 11$, and explain.", field="equations"))        # wrong language
    return rows


def _write(tmp: Path, tiny_model) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _problems()
    raw = tmp / "raw"
    raw.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:4]), raw / "shard-00000.parquet")
    pq.write_table(pa.Table.from_pylist(rows[4:]), raw / "shard-00001.parquet")
    ev = tmp / "problems.jsonl"
    ev.write_text(json.dumps({"id": "eval-7", "category": "中1", "unit": "一次方程式", "solution": "6",
                              "problem": "方程式 $4x + 9 = 33$ を解きなさい。ただし $x$ は実数とする。"},
                             ensure_ascii=False)
                  + "\n", encoding="utf-8")
    params = {"judge": {
        "engine": {"model": str(tiny_model), "backend": "hf", "dtype": "float32", "max_model_len": 2048},
        "sampling": {"temperature": 0.0, "max_new_tokens": 12, "seed": 0},
        "keep_judge_errors": True,  # a random model never writes a verdict; the rows must still flow on
        "max_solution_chars": 400,
    }}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    return {"raw": raw, "eval": ev, "params": tmp / "params.yaml"}


def _invoke(tmp: Path, paths: dict, *extra: str, out: str = "judged"):
    args = ["--params", str(paths["params"]), "--raw", str(paths["raw"]), "--eval", str(paths["eval"]),
            "--out", str(tmp / out), "--metrics", str(tmp / "metrics.json"), "--plot", str(tmp / "plot.json"), *extra]
    return CliRunner().invoke(judge_stage.main, args, catch_exceptions=False)


@pytest.mark.slow
def test_judge_stage_end_to_end(tmp_path, tiny_model):
    import pyarrow.parquet as pq

    paths = _write(tmp_path, tiny_model)
    result = _invoke(tmp_path, paths)
    assert result.exit_code == 0, result.output
    kept = pq.read_table(tmp_path / "judged" / "kept.parquet").to_pylist()
    dropped = pq.read_table(tmp_path / "judged" / "dropped.parquet").to_pylist()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["input_rows"] == 8 == len(kept) + len(dropped)
    assert metrics["kept"] + sum(v for k, v in metrics.items() if k.startswith("drop_")) == 8
    reasons = {r["id"]: (r["drop_reason"], r["match_id"]) for r in dropped}
    assert reasons["g5"] == ("exact_duplicate", "g0")
    assert reasons["g6"] == ("contaminated", "eval-7")
    assert reasons["g7"][0] == "wrong_language"
    # the judge saw the five survivors; kept rows carry the verdict and every input column
    assert metrics["judged"] == 5 and len(kept) == 5
    assert all(r["verdict"] in ("consistent", "judge_error") and "extra_column" in r for r in kept)
    plot = json.loads((tmp_path / "plot.json").read_text())
    assert sum(p["kept"] for p in plot) == 5 and {"field", "difficulty", "kept"} <= set(plot[0])
    assert not list(tmp_path.glob("**/*.tmp"))

    # per shard: only the first input file, written to its own folder
    result = _invoke(tmp_path, paths, "--shard", "0/2")
    assert result.exit_code == 0, result.output
    shard_dir = tmp_path / "judged" / "shard-00000-of-00002"
    shard_rows = (pq.read_table(shard_dir / "kept.parquet").num_rows
                  + pq.read_table(shard_dir / "dropped.parquet").num_rows)
    assert shard_rows == 4
    again = pq.read_table(shard_dir / "kept.parquet").to_pylist()
    assert [r["verdict"] for r in again] == [r["verdict"] for r in kept[:4]]  # temperature 0: same verdicts


def test_missing_input_folder(tmp_path):
    paths = {"params": tmp_path / "params.yaml", "raw": tmp_path / "nope", "eval": tmp_path / "e.jsonl"}
    paths["params"].write_text("judge:\n  llm_judge: false\n")
    result = _invoke(tmp_path, paths)
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [f"Error: {tmp_path / 'nope'}: input not found"]


def test_malformed_rows_and_eval_lines(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "raw").mkdir()
    (tmp_path / "params.yaml").write_text("judge:\n  llm_judge: false\n")
    ev = tmp_path / "e.jsonl"
    ev.write_text('{"id": "a", "problem": "x"}\n{"id": \n')
    paths = {"params": tmp_path / "params.yaml", "raw": tmp_path / "raw", "eval": ev}
    shard = tmp_path / "raw" / "shard-00000.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "g0", "problem": "p", "solution": "s"}]), shard)
    result = _invoke(tmp_path, paths)
    assert result.exit_code != 0
    assert result.output.strip() == f"Error: {shard}: row 1: missing required field(s) answer"

    pq.write_table(pa.Table.from_pylist([_row(0, "問題文です。ある数を求めなさい。")]), shard)
    result = _invoke(tmp_path, paths)
    assert result.exit_code != 0
    assert result.output.strip() == f"Error: {ev}:2: malformed JSON (Expecting value)"


def test_bad_params_and_help(tmp_path):
    (tmp_path / "params.yaml").write_text("judge:\n  llm_judge: false\n  dedup: {near_treshold: 0.5}\n")
    paths = {"params": tmp_path / "params.yaml", "raw": tmp_path, "eval": tmp_path / "e.jsonl"}
    result = _invoke(tmp_path, paths)
    assert result.exit_code != 0 and "judge.dedup.near_treshold" in result.output
    help_text = CliRunner().invoke(judge_stage.main, ["--help"]).output
    assert "section `judge`" in help_text
