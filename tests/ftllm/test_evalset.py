import pytest

from ftllm.evalset import TEMPLATES, EvalsetConfig, build_evalset
from ftllm.grade import is_correct


def test_deterministic_and_unique():
    config = EvalsetConfig(seed=7, per_template=3)
    rows = build_evalset(config)
    assert rows == build_evalset(config)
    assert len(rows) == 3 * len(TEMPLATES)
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["problem"] for r in rows}) == len(rows)
    for row in rows:
        assert set(row) == {"id", "category", "unit", "problem", "solution", "evaluation_method"}
        assert row["category"] in {"中1", "中2", "中3", "IA", "IIB", "IIIC"}


def test_solutions_are_gradable():
    """The gold answer, boxed, must be accepted by our grader; a wrong one must not."""
    for row in build_evalset(EvalsetConfig(seed=3, per_template=1)):
        assert is_correct(f"\\boxed{{{row['solution']}}}", row["solution"], row["evaluation_method"]), row
        assert not is_correct("\\boxed{123456789}", row["solution"], row["evaluation_method"]), row


def test_unknown_template_rejected():
    with pytest.raises(ValueError, match="evalset.templates"):
        EvalsetConfig(templates=["nope"])
