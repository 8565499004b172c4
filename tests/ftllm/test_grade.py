"""The grader-equivalent verdicts, one case (or a few) per rule of ../shared/reference/grader.md."""
import pytest

from ftllm.grade import answer_text, answers_match, extract_answer, grade_row, is_correct
from ftllm.grade.clean import clean_text, drop_noise, join_math_blocks, unify_vectors, wrap_bare
from ftllm.grade import rewrite


# --- pre-cleaning -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "raw, cleaned",
    [
        ("<think>x</think><answer>$3$</answer>", "x$3$"),
        ("1 000 000", "$1000000$"),
        ("$1\\,000$", "$1000$"),
        ("\\sqrt{2}", "$\\sqrt{2}$"),
        ("$x \\geqq 1$", "$x \\geq 1$"),
        ("$\\left( 1, 2 \\right)$", "$( 1, 2 )$"),
        ("$\\displaystyle \\frac12$", "$  \\frac12$"),
        ("$a$ または $b$", "$a, b$"),
        ("$x=1$, $x=2$", "$x=1, x=2$"),
        ("\\boxed{$3$}", "\\boxed{3}"),
    ],
)
def test_clean_text(raw, cleaned):
    assert clean_text(raw) == cleaned


def test_vectors_unified():
    assert unify_vectors("\\overrightarrow{a} + \\mathbf{b} + \\bm{c} + \\boldsymbol{d} + \\vec e") == "a + b + c + d + e"
    assert unify_vectors("\\vec{AB}") == "\\overrightarrow{AB}"
    assert unify_vectors("a\u20d7") == "a"


def test_or_becomes_comma():
    assert clean_text("$x=1 \\lor x=2$") == "$x=1 , x=2$"
    assert clean_text("$x=1 \\text{ または } x=2$") == "$x=1 , x=2$"


def test_prose_is_not_wrapped():
    assert wrap_bare("The answer is 5") == "The answer is 5"
    assert wrap_bare("x^2+1") == "$x^2+1$"
    assert join_math_blocks("$a$ is not $b$") == "$a$ is not $b$"


def test_noise_token_retry():
    assert drop_noise("答え：5") == "$5$"
    assert extract_answer("答え：\\boxed{答え：7}")[0] == 7


# --- soft ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "output, solution",
    [
        ("\\boxed{\\frac{1}{2}}", "0.5"),
        ("<answer>1 000</answer>", "1000"),
        ("$x \\geqq 2$", "x \\geq 2"),
        ("$x=1$ または $x=2$", "x=1, x=2"),
        ("\\boxed{x = 1 \\vee x = 2}", "x=1, x=2"),
        ("\\boxed{\\overrightarrow{a}}", "\\vec{a}"),
        ("\\boxed{P(X=2)=\\frac{1}{3}}", "\\frac{1}{3}"),
        ("。\\boxed{3}", "3"),
        ("\\boxed{2} and \\boxed{3}", "2, 3"),
        ("\\boxed{2(x+1)}", "2x+2"),
    ],
)
def test_soft_normalisations(output, solution):
    assert is_correct(output, solution, "soft")


@pytest.mark.parametrize(
    "output, solution, expected",
    [
        ("\\boxed{\\{1, 2\\}}", "(1, 2)", True),  # bracket variants
        ("\\boxed{[1,2]}", "(1,2)", False),  # ...but two intervals stay different
        ("\\boxed{x = 1 \\pm \\sqrt{2}}", "x = 1+\\sqrt{2}, x = 1-\\sqrt{2}", True),  # \pm expansion
        ("\\boxed{\\{x: 1, y: 2\\}}", "x=1, y=2", True),  # dict-like
        ("\\boxed{\\{1: 3, 2: 5\\}}", "3, 5", True),  # numeric keys keep values
        ("\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "(1, 2)", True),  # vector vs tuple
        ("\\boxed{0.333}", "\\frac{1}{3}", True),  # rounding to the decimal's places
        ("\\boxed{0.334}", "\\frac{1}{3}", False),
        ("\\boxed{0.625x}", "\\frac{5}{8}x", True),  # decimal -> fraction
        ("\\boxed{2pi}", "2\\pi", True),  # bare keywords
        ("\\boxed{sin(x)}", "\\sin(x)", True),
        ("\\boxed{30^\\circ}", "\\frac{\\pi}{6}", True),  # degrees -> radians...
        ("\\boxed{\\frac{\\pi}{6}}", "30^\\circ", False),  # ...one direction only
        ("\\boxed{x > 1}", "(1, \\infty)", True),  # inequality vs interval
        ("\\boxed{x>1, x<3}", "1<x<3", True),  # atoms after lhs - rhs > 0
        ("\\boxed{x>1, x<4}", "1<x<3", False),
    ],
)
def test_soft_fallbacks(output, solution, expected):
    assert is_correct(output, solution, "soft") is expected


# --- strict, complex ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "output, solution, expected",
    [
        ("\\boxed{2(x+1)}", "2x+2", False),  # same value, other tree
        ("\\boxed{x+1}", "1+x", True),
        ("\\boxed{0.625x}", "\\frac{5}{8}x", True),  # decimal -> fraction still applies
        ("\\boxed{0.333}", "\\frac{1}{3}", True),  # and decimal rounding
        ("2pi", "2\\pi", True),  # and keywords
        ("\\boxed{30^\\circ}", "\\frac{\\pi}{6}", False),  # degrees are soft only
        ("\\boxed{\\{1, 2\\}}", "(1, 2)", False),  # bracket variants are soft only
    ],
)
def test_strict(output, solution, expected):
    assert is_correct(output, solution, "strict") is expected


@pytest.mark.parametrize(
    "output, solution, method, expected",
    [
        ("\\boxed{(1+i)^2}", "2i", "complex", True),
        ("\\boxed{e^{i\\theta}+e^{-i\\theta}}", "2\\cos\\theta", "complex", True),  # numeric check
        ("\\boxed{1+2i}", "1-2i", "complex", False),
        ("\\boxed{0.5}", "\\frac{1}{2}", "complex", True),  # falls back to soft
        ("\\boxed{(1+i)^2}", "2i", "complex-strict", False),  # no calculation
        ("\\boxed{2i}", "2i", "complex-strict", True),
    ],
)
def test_complex(output, solution, method, expected):
    assert is_correct(output, solution, method) is expected


# --- rows, lists, errors -------------------------------------------------------------

def test_list_solution_any_matches():
    assert is_correct("\\boxed{3}", ["2", "3"])
    assert not is_correct("\\boxed{4}", ["2", "3"])


def test_grade_row_uses_method_and_defaults_to_soft():
    gold = {"id": 1, "solution": "2x+2", "evaluation_method": "strict"}
    assert not grade_row({"id": 1, "output": "\\boxed{2(x+1)}"}, gold)
    assert grade_row({"id": 1, "output": "\\boxed{2(x+1)}"}, {"id": 1, "solution": "2x+2"})
    assert grade_row({"id": 1, "output": "\\boxed{2(x+1)}"}, {"id": 1, "solution": "2x+2", "evaluation_method": None})


def test_errors_count_as_wrong():
    assert not grade_row({"id": 1}, {"id": 1, "solution": "3"})  # no output
    assert not grade_row({"id": 1, "output": "3"}, {"id": 1})  # no solution
    assert not grade_row({"id": 1, "output": "3"}, {"id": 1, "solution": "3", "evaluation_method": "fuzzy"})
    assert not is_correct("", "3")
    assert not is_correct("\\boxed{\\frac{1}{", "3")
    with pytest.raises(ValueError, match="evaluation_method"):
        answers_match("3", "3", "fuzzy")


def test_answer_text_is_the_extracted_answer():
    assert answer_text("Thus the result is \\boxed{\\frac{1}{2}}.") == "$\\frac{1}{2}$"
    assert answer_text("no math here at all") is None


def test_rewrites_leave_unrelated_text_alone():
    for fn in (rewrite.decimals_to_fractions, rewrite.keywords_to_latex, rewrite.swap_brackets,
               rewrite.dict_to_equations, rewrite.expand_plus_minus, rewrite.degrees_to_radians):
        assert fn("$x^2 + 1$") == "$x^2 + 1$"
    assert rewrite.expand_plus_minus("$a \\pm b \\mp c$") == "$a + b - c, a - b + c$"
    assert rewrite.expand_plus_minus("$a \\pm b \\pm c$").count(",") == 3
    assert rewrite.swap_brackets("$\\sqrt[3]{2} [1, 2]$") == "$\\sqrt[3]{2} (1, 2)$"
