"""The grader's building blocks (cleaning, attempts, extended-parse rewrites, fallback rewrites) and its row rules.

Verdicts rule by rule are in test_grade_rules.py; this file checks the text steps one by one.
"""
import time

import pytest
import sympy

from ftllm.grade import GradeInputError, answer_text, attempts, grade_row, is_correct, rewrite
from ftllm.grade.clean import clean_prediction, has_delimiter, strip_noise
from ftllm.grade.compare import extended_parse


@pytest.mark.parametrize("raw, cleaned", [
    ("<think>a</think><answer>$3$</answer>", "a$3$"),  # §3.1 tags go, bodies stay
    ("<br/> < x <2>", "<br/> < x <2>"),  # not tags
    ("$m<n and k>2$", "$m2$"),  # a tag-shaped inequality is eaten
    ("0. 4", "0.4"), ("6 500", "6500"), ("2 . 5", "2.5"), ("1\n2", "12"),  # §3.2
    ("\\log_3 5", "\\log_3 5"), ("_{2} 3", "_{2} 3"), ("} 3", "} 3"), ("1, 2", "1, 2"), ("1 / 2", "1 / 2"),
    ("3 1/2", "31/2"), ("\\log_12 7", "\\log_127"), ("Step 1. 5", "Step 1.5"),
])
def test_clean_prediction(raw, cleaned):
    assert clean_prediction(raw) == cleaned


def test_delimiters_and_noise():
    assert has_delimiter("\\boxed{1}") and has_delimiter("\\(x\\)") and has_delimiter("a $x$")
    assert not has_delimiter("costs 5$") and not has_delimiter("\\$5") and not has_delimiter("x^2")
    assert strip_noise("答：\\sqrt{5}") == "\\sqrt{5}"
    assert strip_noise("$= x$\nsecond line") == "$x$"  # first line only
    assert strip_noise("= 5") == "5"
    assert strip_noise("(1, 2)") == "(1, 2)"
    assert attempts("答：\\sqrt{5}") == ["答：\\sqrt{5}", "$答：\\sqrt{5}$", "\\sqrt{5}", "$\\sqrt{5}$"]
    assert attempts("$x$") == ["$x$"]


@pytest.mark.parametrize("raw, rewritten", [
    ("$\\[ \\frac{3}{7} \\]$", "$\\frac{3}{7}$"),  # §6.3
    ("$\\displaystyle x$", "$x$"),  # §6.4
    ("$P(Y=3)=\\frac{2}{9}$", "$p_{Y3}=\\frac{2}{9}$"),  # §6.5
    ("$P(A)$", "$P(A)$"),
    ("$\\mathbf{u}+\\overrightarrow{PQ}+\\vec PQ$", "$u+\\vec{PQ}+PQ$"),  # §6.6
    ("$\\mathbf{0}$", "$\\vec{0}$"),
    ("$\\left(1\\right) \\bigl( \\leftarrow$", "$(1) ( arrow$"),  # §6.7
    ("$1\\,2\\quad 3$", "$1 2  3$"),  # §6.8
    ("$3$ and $4$", "$3, 4$"), ("$3$。$4$", "$3$。$4$"), ("\\(3\\) or $4$", "\\(3, 4$"),  # §6.9
    ("$x \\geqq 1$", "$x \\geq 1$"),  # §6.10
    ("$x<1 \\lor x>2$", "$x<1 , x>2$"), ("$a \\text{ かつ } b$", "$a , b$"),  # §6.11
])
def test_extended_parse_rewrites(raw, rewritten):
    assert rewrite.ep_text(raw) == rewritten


def test_plus_minus_and_tuple_reread():
    assert {sympy.simplify(v) for v in extended_parse("$1 \\pm 2$")[0]} == {3, -1}
    assert len(extended_parse("$1 \\pm 2 \\pm 4$")[0]) == 4  # each sign independent
    eq = extended_parse("$x = 1 \\pm 2$")[0]
    assert str(eq.lhs) == "x" and {sympy.simplify(v) for v in eq.rhs} == {3, -1}
    assert type(extended_parse("$(\\frac{u}{v}, \\frac{u}{v})$")[0]).__name__ == "Tuple"  # not an empty interval
    assert str(extended_parse("$\\emptyset$")[0]) == "EmptySet"


def test_fallback_rewrites():
    assert rewrite.bracket_variants("$[1, 2)$") == ["$(1, 2)$", "$[1, 2]$", "$\\{1, 2\\}$"]
    assert rewrite.bracket_variants("$\\sqrt[3]{2}$") == []
    assert rewrite.log_as_ln("\\log x + \\log_2 y + \\log(z)") == "\\ln x + \\log_2 y + \\ln(z)"
    assert rewrite.dict_candidate("\\boxed{a: 2, b: -5}") == "$a = 2, b = -5$"
    assert rewrite.dict_candidate("{1: 0.3, 2: 0.7}") == "$0.3, 0.7$"
    assert rewrite.dict_candidate("3:5") is None and rewrite.dict_candidate("{A: (1, 2), B: 3}") is None
    assert rewrite.vector_names("$\\frac{PQ}{3}$", "$\\overrightarrow{PQ}$") == (
        "$\\frac{\\vec{PQ}}{3}$", "$\\vec{PQ}$")
    assert rewrite.vector_names("$PQ$", "$PQ$") is None
    assert rewrite.degrees_to_radians("$30^{\\circ}$") == "$30\\cdot\\frac{\\pi}{180}$"
    assert rewrite.decimals_to_fractions("0.75y") == "\\frac{75}{100}y"
    assert rewrite.keywords_to_latex("3pi + cos(pi/4) + spin + sinx") == "3\\pi + \\cos(\\pi/4) + spin + sinx"


def test_row_rules():
    assert is_correct("\\boxed{3}", ["$2$", "$3$"])  # golds tried in order
    assert not is_correct("\\boxed{3}", [])
    assert grade_row({"output": "\\boxed{2(x+1)}"}, {"solution": "$2x+2$", "evaluation_method": None})  # null: soft
    assert not grade_row({"output": "\\boxed{2(x+1)}"}, {"solution": "$2x+2$", "evaluation_method": "strict"})
    assert not grade_row({"output": "3"}, {"id": 1})
    with pytest.raises(GradeInputError, match="evaluation_method"):
        grade_row({"output": "3"}, {"solution": "$3$", "evaluation_method": "fuzzy"})
    with pytest.raises(GradeInputError, match="string"):
        grade_row({"output": None}, {"solution": "$3$"})


def test_answer_text_for_voting():
    assert answer_text("Thus \\boxed{\\frac{1}{2}}.") == "$\\frac{1}{2}$"
    assert answer_text("no math here at all") is None


def test_hostile_text_is_bounded():
    start = time.perf_counter()
    assert not is_correct("{a:" + "\\frac" * 2000, "$1$")
    assert not is_correct("$" + "\\pm 1" * 40 + "$", "$1$")  # 2^40 sign choices are not tried
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("a, b, method, same", [
    ("$\\frac{1}{2}$", "$\\frac{2}{4}$", "soft", True),
    ("$2(x+1)$", "$2x+2$", "soft", True),
    ("$2(x+1)$", "$2x+2$", "strict", False),  # per row's method
    ("$120^\\circ$", "$120$", "soft", False),  # both-way match, but only one matches 2pi/3
    ("$\\log 7$", "$\\log_{10} 7$", "soft", False),  # only the first matches ln 7
    ("$2.7$", "$2.72$", "soft", False),  # rounding: they differ against 2.71
    ("$\\overrightarrow{PQ}$", "$\\vec{PQ}$", "soft", True),
    ("$PQ$", "$\\overrightarrow{PQ}$", "soft", False),
    ("$i^2$", "$-1$", "complex", True),
])
def test_vote_equivalence(a, b, method, same):
    from ftllm.grade import equivalent

    assert equivalent(a, b, method) is same
    assert equivalent(b, a, method) is same  # symmetric


def test_prediction_rows_carry_only_grader_keys():
    from ftllm.grade.files import prediction_row

    row = {"id": 3, "problem": "p", "category": "IA", "unit": "u", "solution": "$1$", "source": "x", "reasoning": "..."}
    assert prediction_row(row, "\\boxed{1}") == {"id": 3, "problem": "p", "category": "IA", "unit": "u",
                                                 "solution": "$1$", "output": "\\boxed{1}"}


def test_a_control_character_never_splits_an_answer():
    # a NUL inside the box used to let the parser read the last number alone ("2"); stripped, the digits join
    assert not is_correct("\\boxed{1\x00 2}", "$2$", "soft")
    assert is_correct("\\boxed{1\x00 2}", "$12$", "soft")
