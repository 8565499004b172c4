import pytest

from ftllm.evalset import TEMPLATES, EvalsetConfig, build_evalset, check_gold
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
    """Gold math sits inside `$…$`; the answer, boxed, is accepted by our grader; a wrong one is not."""
    for row in build_evalset(EvalsetConfig(seed=3, per_template=1)):
        inner = row["solution"][1:-1]
        assert row["solution"] == f"${inner}$" and "$" not in inner, row
        assert is_correct(f"\\boxed{{{inner}}}", row["solution"], row["evaluation_method"]), row
        assert not is_correct("\\boxed{123456789}", row["solution"], row["evaluation_method"]), row


def test_bare_latex_gold_is_refused():
    """Undelimited LaTeX gold reads as nothing in soft (grader.md §2.5): the check names the problem."""
    rows = [{"id": "eval-x-001", "solution": "2 \\sqrt{5}", "evaluation_method": "soft"}]
    with pytest.raises(ValueError, match="eval-x-001"):
        check_gold(rows)
    assert not is_correct("$\\sqrt{20}$", "2 \\sqrt{5}")  # the disagreement this prevents
    assert is_correct("$\\sqrt{20}$", "$2 \\sqrt{5}$")


def test_unknown_template_rejected():
    with pytest.raises(ValueError, match="evalset.templates"):
        EvalsetConfig(templates=["nope"])
