"""Rule by rule against ../shared/reference/grader.md: each case is (output, solution, method, verdict).

Positive and negative cases for every rule, so a normalisation that is too eager (grouping what the
official `math-eval` splits) fails as surely as one that is missing.
"""
import time

import pytest

from ftllm.grade import grade_row, is_correct, rewrite
from ftllm.grade.clean import clean_text


def verdicts(cases):
    """pytest params with readable ids."""
    return [pytest.param(o, s, m, e, id=f"{m}:{o}|{s}") for o, s, m, e in cases]


def check(output, solution, method, expected):
    assert is_correct(output, solution, method) is expected


# --- before comparing --------------------------------------------------------------------------

@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("<think>maybe 7</think>\\boxed{5}", "5", "soft", True),
    ("<answer>\\frac{1}{2}</answer>", "0.5", "soft", True),
    ("<b>5</b><br/>", "5", "strict", True),
    ("<think>5</think>\\boxed{7}", "5", "soft", False),  # the tag goes, not what the box says
    ("$0<x<3$", "0<x<3", "strict", True),  # `<x<` is no tag
]))
def test_tags_removed(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("1 000", "1000", "strict", True),
    ("\\boxed{1 000 000}", "1000000", "strict", True),
    ("\\boxed{12 345}", "12345", "soft", True),
    ("$1\\,000$", "1000", "strict", True),
    ("\\boxed{1 000}", "1", "soft", False),
    ("\\boxed{1 000}", "100", "soft", False),
]))
def test_digit_spaces_removed(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\sqrt{2}", "\\sqrt{2}", "strict", True),
    ("\\frac{1}{2}", "0.5", "soft", True),
    ("x^2+1", "1+x^2", "strict", True),
    ("\\sqrt{2}", "\\sqrt{3}", "soft", False),
    ("\\frac{1}{3}", "\\frac{1}{2}", "soft", False),
]))
def test_bare_expression_wrapped(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{P(X=2)=\\frac{1}{3}}", "\\frac{1}{3}", "soft", True),
    ("$P(X = 2) = \\frac{1}{3}$", "\\frac{1}{3}", "strict", True),
    ("$P(X \\geq 1) = \\frac{7}{8}$", "\\frac{7}{8}", "soft", True),
    ("$P(X=0)=\\frac{1}{4}, P(X=1)=\\frac{3}{4}$", "\\frac{1}{4}, \\frac{3}{4}", "soft", True),
    ("$P(X=2)=\\frac{1}{3}$", "2", "soft", False),  # the argument is not the answer
    ("$P(X=2)=\\frac{1}{3}$", "\\frac{1}{2}", "soft", False),
]))
def test_probability_notation(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{\\vec{a}}", "a", "strict", True),  # single letters stripped to the letter
    ("\\boxed{\\overrightarrow{a}}", "a", "strict", True),
    ("\\boxed{\\boldsymbol{a}}", "a", "strict", True),
    ("\\boxed{\\mathbf{F}}", "F", "strict", True),
    ("\\boxed{\\bm{v}}", "v", "strict", True),
    ("\\boxed{a\u20d7}", "a", "strict", True),  # combining arrow
    ("\\boxed{\\vec{a}+\\vec{b}}", "\\mathbf{a}+\\mathbf{b}", "strict", True),
    ("\\boxed{\\overrightarrow{AB}}", "\\vec{AB}", "strict", True),  # multi-letter kept whole...
    ("\\boxed{\\overrightarrow{AB}}", "AB", "soft", False),  # ...so not the product A*B
    ("\\boxed{\\overrightarrow{AB}}", "\\overrightarrow{AC}", "soft", False),
    ("\\boxed{\\vec{a}}", "b", "soft", False),
    ("\\boxed{\\overrightarrow{AB} = (2, 3)}", "(2, 3)", "soft", True),
]))
def test_vector_notations(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{x \\geqq 2}", "x \\geq 2", "strict", True),
    ("\\boxed{x \\leqq 2}", "x \\leq 2", "strict", True),
    ("\\boxed{x ≧ 2}", "x \\geq 2", "strict", True),
    ("\\boxed{x \\leqq 2}", "x \\geq 2", "soft", False),
    ("\\boxed{x \\geqq 2}", "x > 2", "soft", False),
]))
def test_double_bar_inequalities(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{x=1 \\vee x=2}", "x=1, x=2", "strict", True),
    ("\\boxed{x=1 \\lor x=2}", "x=1, x=2", "strict", True),
    ("\\boxed{x=1 \\text{または} x=2}", "x=1, x=2", "strict", True),
    ("\\boxed{x=1 \\text{ or } x=2}", "x=1, x=2", "strict", True),
    ("$x = 1 \\;\\text{or}\\; x = 2$", "x=1, x=2", "soft", True),
    ("x=1 or x=2", "x=1, x=2", "soft", True),
    ("\\boxed{x=1 \\vee x=3}", "x=1, x=2", "soft", False),
    ("\\boxed{x=1 \\lor x=2}", "x=1", "soft", False),
]))
def test_logical_or_to_comma(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("$\\left( 1, 2 \\right)$", "(1,2)", "strict", True),
    ("$\\bigl( 1, 2 \\bigr)$", "(1,2)", "strict", True),
    ("$\\Bigl[ 1, 2 \\Bigr]$", "[1,2]", "strict", True),
    ("$\\left\\{ 1, 2 \\right\\}$", "\\{1,2\\}", "strict", True),
    ("$\\displaystyle \\frac{1}{2}$", "\\frac{1}{2}", "strict", True),
    ("$2\\,x$", "2x", "strict", True),
    ("$x \\> y$", "xy", "strict", True),
    ("$x\\enspace y$", "xy", "strict", True),
    ("$\\frac{1}{2} \\quad$", "\\frac{1}{2}", "strict", True),
    # a matrix row break `\\ ` is not the spacing command `\ `
    ("\\boxed{\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}}", "(1, 2)", "soft", True),
    ("\\boxed{\\begin{pmatrix}1 \\\\ 3\\end{pmatrix}}", "(1, 2)", "soft", False),
    ("$\\left( 1, 3 \\right)$", "(1,2)", "soft", False),
    ("$\\left[ 1, 2 \\right]$", "(1,2)", "soft", False),  # sizing goes, the bracket stays
]))
def test_spacing_and_sizing_removed(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("$x=1$ または $x=2$", "x=1, x=2", "strict", True),
    ("$a$ または $b$", "a, b", "strict", True),
    ("$x=1$、$x=2$", "x=1, x=2", "soft", True),
    ("$x=1$ と $x=2$", "x=1, x=2", "soft", True),
    ("\\(x=1\\), \\(x=2\\)", "x=1, x=2", "soft", True),
    ("\\boxed{x=1} または \\boxed{x=2}", "x=1, x=2", "soft", True),
    ("$x=1$ または $x=2$", "x=2", "soft", False),  # not just the last block any more
    ("$x=1$ または $x=3$", "x=1, x=2", "soft", False),
]))
def test_adjacent_math_blocks_joined(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{$3$}", "3", "strict", True),
    ("$\\boxed{3}$", "3", "strict", True),
    ("$$\\boxed{\\frac{1}{2}}$$", "\\frac{1}{2}", "strict", True),
    ("\\boxed{\\(\\frac{1}{2}\\)}", "\\frac{1}{2}", "strict", True),
    ("\\[ $\\frac{1}{2}$ \\]", "\\frac{1}{2}", "strict", True),
    ("\\boxed{$x=1$ または $x=2$}", "x=1, x=2", "soft", True),
    ("\\boxed{$4$}", "3", "soft", False),
]))
def test_nested_delimiters_flattened(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("。3", "3", "soft", True),
    ("。$3$", "3", "strict", True),
    ("答え：3", "3", "soft", True),
    ("答え：$\\frac{1}{2}$", "\\frac{1}{2}", "strict", True),
    ("答え：\\boxed{7}", "7", "soft", True),
    ("答え：5", "6", "soft", False),
    ("。$\\frac{1}{3}$", "\\frac{1}{2}", "soft", False),
]))
def test_leading_noise_token(output, solution, method, expected):
    check(output, solution, method, expected)


# --- soft --------------------------------------------------------------------------------------

@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", "soft", True),
    ("\\boxed{\\frac{2}{4}}", "\\frac{1}{2}", "soft", True),
    ("\\boxed{(x-1)^2}", "x^2-2x+1", "soft", True),
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", "soft", True),
    ("\\boxed{y=2x+1}", "2x+1", "soft", True),
    ("\\boxed{2x+1}", "y=2x+1", "soft", True),
    ("\\boxed{x=1, y=2}", "1, 2", "soft", True),  # Math-Verify's own assignment unwrapping
    ("\\boxed{2} and \\boxed{3}", "2, 3", "soft", True),  # every box
    ("\\boxed{2} ... \\boxed{3}", "3", "soft", False),
    ("\\boxed{2\\sqrt{3}}", "\\sqrt{8}", "soft", False),
    ("\\boxed{x^2+2x+1}", "x^2-2x+1", "soft", False),
]))
def test_soft_value_equality(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{\\{1, 2\\}}", "(1, 2)", "soft", True),
    ("\\boxed{[1,2]}", "\\{1,2\\}", "soft", True),
    ("\\boxed{(1,2)}", "\\{1,2\\}", "soft", True),
    ("\\boxed{[1,2]}", "(1,2)", "soft", False),  # two intervals are not bracket variants
    ("\\boxed{(1,2)}", "[1,2]", "soft", False),
    ("\\boxed{[1,2)}", "(1,2]", "soft", False),
    ("\\boxed{\\{1, 3\\}}", "(1, 2)", "soft", False),
    ("\\boxed{\\{1, 2\\}}", "(1, 2)", "strict", False),  # soft only
]))
def test_soft_bracket_variants(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{\\pm 2}", "2, -2", "soft", True),
    ("\\boxed{2, -2}", "\\pm 2", "soft", True),
    ("\\boxed{x=\\pm 2}", "x=2, x=-2", "soft", True),
    ("\\boxed{x = 1 \\pm \\sqrt{2}}", "x = 1+\\sqrt{2}, x = 1-\\sqrt{2}", "soft", True),
    ("\\boxed{1 \\mp \\sqrt{3}}", "1+\\sqrt{3}, 1-\\sqrt{3}", "soft", True),
    ("\\boxed{(\\pm 1, \\pm 2)}", "(1,2),(1,-2),(-1,2),(-1,-2)", "soft", True),  # every combination
    ("\\boxed{(1, 0), (-1, 0)}", "(\\pm 1, 0)", "soft", True),
    ("\\boxed{\\pm 2}", "2", "soft", False),
    ("\\boxed{1 \\pm \\sqrt{2}}", "1+\\sqrt{2}", "soft", False),
    ("\\boxed{x = 1 \\pm \\sqrt{2}}", "x = 1+\\sqrt{2}, x = 1-\\sqrt{2}", "strict", False),
]))
def test_soft_plus_minus(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{\\{x: 1, y: 2\\}}", "x=1, y=2", "soft", True),
    ("{x: 1, y: 2}", "x=1, y=2", "soft", True),
    ("$\\left\\{x: 1, y: 2\\right\\}$", "x=1, y=2", "soft", True),
    ("\\boxed{\\{a_1: 1, a_2: 4\\}}", "a_1=1, a_2=4", "soft", True),
    ("\\boxed{\\{1: 3, 2: 5\\}}", "3, 5", "soft", True),  # numeric keys keep values only
    ("\\boxed{\\{1: \\frac{1}{2}, 2: \\frac{1}{3}\\}}", "\\frac{1}{2}, \\frac{1}{3}", "soft", True),
    ("\\boxed{\\{x: \\sqrt{\\frac{1}{3}}, y: 2\\}}", "x=\\sqrt{\\frac{1}{3}}, y=2", "soft", True),
    ("\\boxed{\\{1: 3, 2: 5\\}}", "1, 2", "soft", False),
    ("\\boxed{\\{x: 1, y: 3\\}}", "x=1, y=2", "soft", False),
    ("\\boxed{\\{x: 2, y: 1\\}}", "x=1, y=2", "soft", False),
    ("\\boxed{\\{x: 1, y: 2\\}}", "x=1, y=2", "strict", False),  # soft only
]))
def test_soft_dict_answers(output, solution, method, expected):
    check(output, solution, method, expected)


def test_dict_rewrite_cannot_hang():
    start = time.perf_counter()
    rewrite.dict_to_equations("{a:" + "\\frac" * 2000)  # unclosed: once exponential backtracking
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "(1, 2)", "soft", True),
    ("\\boxed{\\begin{pmatrix}1 & 2\\end{pmatrix}}", "(1, 2)", "soft", True),
    ("\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "\\begin{pmatrix}1 & 2\\end{pmatrix}", "soft", True),
    ("\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "(2, 1)", "soft", False),
    ("\\boxed{\\begin{pmatrix}1\\\\3\\end{pmatrix}}", "(1, 2)", "soft", False),
]))
def test_soft_vectors_and_tuples(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{0.333}", "\\frac{1}{3}", "soft", True),
    ("\\boxed{\\frac{1}{3}}", "0.333", "soft", True),  # either side may be the decimal
    ("\\boxed{\\frac{1}{3}}", "0.33", "soft", True),
    ("\\boxed{-0.333}", "-\\frac{1}{3}", "soft", True),
    ("\\boxed{0.667}", "\\frac{2}{3}", "soft", True),
    ("\\boxed{3.14}", "\\pi", "soft", True),
    ("\\boxed{0.333}", "\\frac{1}{3}", "strict", True),  # strict keeps this fallback
    ("\\boxed{1.41}", "\\sqrt{2}", "strict", True),
    ("\\boxed{0.334}", "\\frac{1}{3}", "soft", False),
    ("\\boxed{0.666}", "\\frac{2}{3}", "soft", False),  # rounded, not truncated
    ("\\boxed{0.33}", "\\frac{1}{2}", "soft", False),
    ("\\boxed{3.15}", "\\pi", "strict", False),
]))
def test_decimal_rounding(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{0.625x}", "\\frac{5}{8}x", "soft", True),
    ("\\boxed{0.625x}", "\\frac{5}{8}x", "strict", True),
    ("\\boxed{2.5}", "\\frac{5}{2}", "strict", True),
    ("\\boxed{1.5x+2}", "\\frac{3}{2}x+2", "strict", True),
    ("\\boxed{\\frac{0.5}{x}}", "\\frac{\\frac{1}{2}}{x}", "strict", True),  # inside \frac
    ("\\boxed{\\sin(0.5x)}", "\\sin(\\frac{1}{2}x)", "strict", True),  # inside a function argument
    ("\\boxed{0.625x}", "\\frac{5}{7}x", "soft", False),
    ("\\boxed{0.5x+2}", "\\frac{3}{2}x+2", "strict", False),
    ("\\boxed{\\sin(0.5x)}", "\\sin(\\frac{1}{3}x)", "strict", False),
]))
def test_decimal_to_fraction(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{pi}", "\\pi", "strict", True),
    ("\\boxed{2pi}", "2\\pi", "strict", True),
    ("2pi", "2\\pi", "strict", True),
    ("\\boxed{sin(x)}", "\\sin(x)", "strict", True),
    ("\\boxed{pi/2}", "\\frac{\\pi}{2}", "soft", True),
    ("\\boxed{sqrt(2)}", "\\sqrt{2}", "soft", True),
    ("\\boxed{2pi}", "3\\pi", "soft", False),
    ("\\boxed{sin(x)}", "\\cos(x)", "soft", False),
    ("\\boxed{pi}", "\\frac{\\pi}{2}", "strict", False),
]))
def test_bare_keywords(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{30^\\circ}", "\\frac{\\pi}{6}", "soft", True),
    ("\\boxed{30^{\\circ}}", "\\frac{\\pi}{6}", "soft", True),
    ("\\boxed{30°}", "\\frac{\\pi}{6}", "soft", True),
    ("\\boxed{22.5°}", "\\frac{\\pi}{8}", "soft", True),
    ("\\boxed{30^\\circ}", "30^\\circ", "strict", True),
    ("\\boxed{45^\\circ}", "\\frac{\\pi}{6}", "soft", False),
    ("\\boxed{\\frac{\\pi}{6}}", "30^\\circ", "soft", False),  # one direction only
    ("\\boxed{30^\\circ}", "\\frac{\\pi}{6}", "strict", False),  # soft only
    ("\\boxed{30}", "\\frac{\\pi}{6}", "soft", False),
]))
def test_degrees_to_radians(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{x > 1}", "(1, \\infty)", "soft", True),
    ("\\boxed{(1, \\infty)}", "x > 1", "soft", True),
    ("\\boxed{x \\geq 1}", "[1, \\infty)", "soft", True),
    ("\\boxed{1 < x < 3}", "(1, 3)", "soft", True),
    ("\\boxed{1 \\leq x < 3}", "[1, 3)", "soft", True),
    ("$x<-1$ または $x>1$", "(-\\infty,-1) \\cup (1,\\infty)", "soft", True),
    ("\\boxed{x>1, x<3}", "1<x<3", "soft", True),  # atom by atom
    ("\\boxed{3 > x > 1}", "1<x<3", "soft", True),
    ("\\boxed{x-1 > 0}", "x > 1", "soft", True),  # lhs - rhs > 0
    ("\\boxed{2x > 2}", "x > 1", "soft", True),
    ("\\boxed{x<-1 \\text{ or } x>1}", "x<-1, x>1", "soft", True),
    ("\\boxed{(2, 1)}", "(2, 1)", "soft", True),  # a tuple, not an empty interval
    ("\\boxed{x \\geq 1}", "(1, \\infty)", "soft", False),
    ("\\boxed{1 < x < 3}", "[1, 3]", "soft", False),
    ("\\boxed{x \\leq -1, x \\geq 1}", "(-\\infty,-1) \\cup (1,\\infty)", "soft", False),
    ("\\boxed{x>1, x<4}", "1<x<3", "soft", False),
    ("\\boxed{x < 1}", "x > 1", "soft", False),
    ("\\boxed{x > 1}", "x \\geq 1", "soft", False),
    ("\\boxed{(2, 1)}", "(2, 3)", "soft", False),  # two "empty intervals" are still different
    ("\\boxed{x > 1}", "(1, \\infty)", "strict", False),
]))
def test_inequalities_and_intervals(output, solution, method, expected):
    check(output, solution, method, expected)


# --- strict ------------------------------------------------------------------------------------

@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "strict", True),
    ("\\boxed{1/2}", "\\frac{1}{2}", "strict", True),
    ("\\boxed{x+1}", "1+x", "strict", True),
    ("\\boxed{y = 1 + 2x}", "y=2x+1", "strict", True),
    ("\\boxed{\\sqrt{8}}", "\\sqrt{8}", "strict", True),
    ("\\boxed{\\pm 2}", "2, -2", "strict", True),  # Math-Verify itself parses `\pm 2` as {-2, 2}
    ("\\boxed{\\{1, 2\\}}", "1, 2", "strict", True),
    # Math-Verify's parser turns a fraction of two integers into one Rational, so the parsed
    # trees of 2/4 and 1/2 are the same: strict cannot tell them apart.
    ("\\boxed{\\frac{2}{4}}", "\\frac{1}{2}", "strict", True),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", "strict", False),
    ("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", "strict", False),
    ("\\boxed{2(x+1)}", "2x+2", "strict", False),
    ("\\boxed{(x-1)^2}", "x^2-2x+1", "strict", False),
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", "strict", False),
    ("\\boxed{\\sqrt{4}}", "2", "strict", False),
    ("\\boxed{x=3}", "3", "strict", False),  # an equation is another tree
]))
def test_strict_same_tree(output, solution, method, expected):
    check(output, solution, method, expected)


# --- complex -----------------------------------------------------------------------------------

@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{(1+i)^2}", "2i", "complex", True),
    ("\\boxed{i^2}", "-1", "complex", True),
    ("\\boxed{\\frac{1}{i}}", "-i", "complex", True),
    ("\\boxed{3+4i}", "4i+3", "complex", True),
    ("\\boxed{e^{i\\theta}+e^{-i\\theta}}", "2\\cos\\theta", "complex", True),  # numerically
    ("\\boxed{\\frac{e^{i\\theta}-e^{-i\\theta}}{2i}}", "\\sin\\theta", "complex", True),
    ("\\boxed{\\cos\\theta + i\\sin\\theta}", "e^{i\\theta}", "complex", True),
    ("\\boxed{e^{i\\pi}}", "-1", "complex", True),
    ("\\boxed{0.5}", "\\frac{1}{2}", "complex", True),  # falls back to soft
    ("\\boxed{x > 1}", "(1,\\infty)", "complex", True),
    ("\\boxed{1+i, 1-i}", "1 \\pm i", "complex", True),
    ("\\boxed{1+2i}", "1-2i", "complex", False),
    ("\\boxed{e^{i\\theta}}", "\\cos\\theta - i\\sin\\theta", "complex", False),
    ("\\boxed{i^2}", "-1", "soft", False),  # only complex reads i as the imaginary unit
]))
def test_complex(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("output, solution, method, expected", verdicts([
    ("\\boxed{2i}", "2i", "complex-strict", True),
    ("\\boxed{1+2i}", "2i+1", "complex-strict", True),
    ("\\boxed{3-4i}", "-4i+3", "complex-strict", True),
    ("\\boxed{2(1+i)}", "2(1+i)", "complex-strict", True),
    ("\\boxed{e^{i\\theta}}", "e^{i\\theta}", "complex-strict", True),
    ("\\boxed{0.5}", "\\frac{1}{2}", "complex-strict", True),  # strict's decimal fallbacks
    ("\\boxed{0.5+0.5i}", "\\frac{1}{2}+\\frac{1}{2}i", "complex-strict", True),
    ("\\boxed{(1+i)^2}", "2i", "complex-strict", False),  # no calculation...
    ("\\boxed{i^2}", "-1", "complex-strict", False),  # ...not even from substituting I
    ("\\boxed{2(1+i)}", "2+2i", "complex-strict", False),
    ("\\boxed{\\frac{1+i}{2}}", "\\frac{1}{2}+\\frac{1}{2}i", "complex-strict", False),
    ("\\boxed{e^{i\\theta}+e^{-i\\theta}}", "2\\cos\\theta", "complex-strict", False),
]))
def test_complex_strict(output, solution, method, expected):
    check(output, solution, method, expected)


# --- rows ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("output, solution, method, expected", [
    ("\\boxed{3}", ["2", "3"], "soft", True),
    ("\\boxed{x=2}", ["2", "x=2"], "strict", True),
    ("\\boxed{2(x+1)}", ["2x+2", "2(x+1)"], "strict", True),
    ("\\boxed{4}", ["2", "3"], "soft", False),
    ("\\boxed{2(x+1)}", ["2x+2", "x+1"], "strict", False),
    ("\\boxed{3}", [], "soft", False),
])
def test_list_valued_solution(output, solution, method, expected):
    check(output, solution, method, expected)


@pytest.mark.parametrize("pred, gold, expected", [
    ({"id": 1}, {"id": 1, "solution": "3"}, False),  # no output
    ({"id": 1, "output": None}, {"id": 1, "solution": "3"}, False),
    ({"id": 1, "output": "3"}, {"id": 1}, False),  # no solution
    ({"id": 1, "output": "3"}, {"id": 1, "solution": "3", "evaluation_method": "fuzzy"}, False),
    ({"id": 1, "output": "\\boxed{\\frac{1}{"}, {"id": 1, "solution": "3"}, False),
    ({"id": 1, "output": ""}, {"id": 1, "solution": "3"}, False),
    ({"id": 1, "output": "3"}, {"id": 1, "solution": None}, False),
    ({"id": 1, "output": "\\boxed{2(x+1)}"}, {"id": 1, "solution": "2x+2"}, True),  # soft by default
    ({"id": 1, "output": "\\boxed{2(x+1)}"}, {"id": 1, "solution": "2x+2", "evaluation_method": "strict"}, False),
])
def test_rows_and_errors(pred, gold, expected):
    assert grade_row(pred, gold) is expected


def test_cleaning_keeps_matrix_row_breaks():
    assert clean_text("$\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}$") == "$\\begin{pmatrix}1 \\\\ 2\\end{pmatrix}$"
    assert clean_text("$\\begin{pmatrix}1 \\\\\\left(2\\right)\\end{pmatrix}$") == "$\\begin{pmatrix}1 \\\\(2)\\end{pmatrix}$"
