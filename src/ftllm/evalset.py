"""The project's own evaluation problems, in the competition's format.

Each template writes a Japanese problem with random coefficients and lets sympy
compute the exact answer, so the set needs no download and every `solution` is
right by construction. Rows: `id, category, unit, problem, solution,
evaluation_method` (the grader's per-row method; `complex` where the answer is a
complex number). Solutions are written like the competition's gold files, the math
inside `$…$` (the official grader reads undelimited LaTeX as plain text), and each
one, boxed as an answer, must grade correct (`check_gold`) or the set is not built.

The set never enters training: the judge stage decontaminates the teacher's
problems against it by n-gram overlap.
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path

import sympy as sp

x = sp.Symbol("x")


@dataclasses.dataclass(frozen=True)
class EvalsetConfig:
    seed: int = 2026
    per_template: int = 2  # problems per template
    templates: list[str] = dataclasses.field(default_factory=tuple)  # empty = all

    def __post_init__(self) -> None:
        if self.per_template < 1:
            raise ValueError("evalset.per_template must be >= 1")
        unknown = [t for t in self.templates if t not in TEMPLATES]
        if unknown:
            raise ValueError(f"evalset.templates: unknown template(s) {unknown}; known: {sorted(TEMPLATES)}")


Problem = tuple[str, str, str, str]  # category, unit, problem text, solution (LaTeX)


def _latex(value) -> str:
    return sp.latex(sp.nsimplify(value) if not isinstance(value, sp.Basic) else value)


def _arithmetic(r: random.Random) -> Problem:
    a, b, c = r.randint(2, 9), r.randint(2, 9), r.randint(2, 9)
    return "中1", "正負の数", f"次の計算をしなさい。$({-a}) + {b} \\times {c}$", _latex(-a + b * c)


def _linear_equation(r: random.Random) -> Problem:
    sol, a, b = r.randint(-9, 9), r.randint(2, 9), r.randint(-20, 20)
    c = a * sol + b
    lhs = sp.latex(a * x + b)
    return "中1", "一次方程式", f"方程式 ${lhs} = {c}$ を解きなさい。", _latex(sol)


def _simultaneous(r: random.Random) -> Problem:
    px, py = r.randint(-6, 6), r.randint(-6, 6)
    s, d = px + py, px - py
    text = f"連立方程式 $x + y = {s}$, $x - y = {d}$ を解き、$x$ の値を求めなさい。"
    return "中2", "連立方程式", text, _latex(px)


def _slope(r: random.Random) -> Problem:
    x1, x2 = r.sample(range(-5, 6), 2)
    y1, y2 = r.randint(-9, 9), r.randint(-9, 9)
    text = f"2点 $({x1}, {y1})$, $({x2}, {y2})$ を通る直線の傾きを求めなさい。"
    return "中2", "一次関数", text, _latex(sp.Rational(y2 - y1, x2 - x1))


def _quadratic_root(r: random.Random) -> Problem:
    p, q = r.sample(range(-9, 10), 2)
    poly = sp.expand((x - p) * (x - q))
    text = f"二次方程式 ${sp.latex(poly)} = 0$ の解のうち、大きい方を求めなさい。"
    return "中3", "二次方程式", text, _latex(max(p, q))


def _sqrt_simplify(r: random.Random) -> Problem:
    a, b = r.randint(2, 6), r.choice([2, 3, 5, 6, 7])
    n = a * a * b
    return "中3", "平方根", f"$\\sqrt{{{n}}}$ を簡単にしなさい。", sp.latex(sp.sqrt(n))


def _quadratic_min(r: random.Random) -> Problem:
    b, c = r.randint(-8, 8), r.randint(-10, 10)
    f = x**2 + b * x + c
    minimum = f.subs(x, sp.Rational(-b, 2))
    return "IA", "二次関数", f"関数 $y = {sp.latex(f)}$ の最小値を求めなさい。", _latex(minimum)


def _dice(r: random.Random) -> Problem:
    k = r.randint(3, 11)
    ways = sum(1 for i in range(1, 7) for j in range(1, 7) if i + j == k)
    text = f"2個のさいころを同時に投げるとき、出る目の和が ${k}$ になる確率を求めなさい。"
    return "IA", "場合の数と確率", text, _latex(sp.Rational(ways, 36))


def _combination(r: random.Random) -> Problem:
    n, k = r.randint(5, 10), r.randint(2, 4)
    text = f"異なる ${n}$ 個のものから ${k}$ 個を選ぶ組合せの総数を求めなさい。"
    return "IA", "場合の数と確率", text, _latex(sp.binomial(n, k))


def _arithmetic_series(r: random.Random) -> Problem:
    a, d, n = r.randint(1, 9), r.randint(2, 5), r.randint(5, 12)
    total = n * (2 * a + (n - 1) * d) // 2
    text = f"初項 ${a}$、公差 ${d}$ の等差数列の初項から第 ${n}$ 項までの和を求めなさい。"
    return "IIB", "数列", text, _latex(total)


def _derivative(r: random.Random) -> Problem:
    a, b, c, at = r.randint(1, 4), r.randint(-5, 5), r.randint(-5, 5), r.randint(-3, 3)
    f = a * x**3 + b * x**2 + c * x
    value = sp.diff(f, x).subs(x, at)
    return "IIB", "微分", f"$f(x) = {sp.latex(f)}$ のとき、$f'({at})$ の値を求めなさい。", _latex(value)


def _integral(r: random.Random) -> Problem:
    a, b = r.randint(1, 3), r.randint(-4, 4)
    f = a * x**2 + b * x
    lo, hi = 0, r.randint(1, 3)
    value = sp.integrate(f, (x, lo, hi))
    text = f"定積分 $\\int_{{{lo}}}^{{{hi}}} ({sp.latex(f)})\\,dx$ を求めなさい。"
    return "IIB", "積分", text, _latex(value)


def _logarithm(r: random.Random) -> Problem:
    base, k = r.choice([2, 3, 5]), r.randint(2, 5)
    return "IIB", "指数関数と対数関数", f"$\\log_{{{base}}} {base**k}$ の値を求めなさい。", _latex(k)


def _dot_product(r: random.Random) -> Problem:
    a = [r.randint(-5, 5) for _ in range(2)]
    b = [r.randint(-5, 5) for _ in range(2)]
    text = (
        f"ベクトル $\\vec{{a}} = ({a[0]}, {a[1]})$, $\\vec{{b}} = ({b[0]}, {b[1]})$ の内積 "
        "$\\vec{a} \\cdot \\vec{b}$ を求めなさい。"
    )
    return "IIIC", "ベクトル", text, _latex(a[0] * b[0] + a[1] * b[1])


def _complex_product(r: random.Random) -> Problem:
    a, b, c, d = (r.randint(-4, 4) or 1 for _ in range(4))
    z = sp.expand((a + b * sp.I) * (c + d * sp.I))
    w1, w2 = sp.latex(a + b * sp.I), sp.latex(c + d * sp.I)
    text = f"複素数 $({w1})({w2})$ を計算しなさい。"
    return "IIIC", "複素数平面", text, sp.latex(z)


def _limit(r: random.Random) -> Problem:
    a, b = r.randint(1, 9), r.randint(1, 9)
    text = f"極限 $\\lim_{{x \\to \\infty}} \\frac{{{a}x + 1}}{{{b}x - 2}}$ を求めなさい。"
    return "IIIC", "極限", text, _latex(sp.Rational(a, b))


TEMPLATES: dict[str, Callable[[random.Random], Problem]] = {
    "arithmetic": _arithmetic,
    "linear_equation": _linear_equation,
    "simultaneous": _simultaneous,
    "slope": _slope,
    "quadratic_root": _quadratic_root,
    "sqrt_simplify": _sqrt_simplify,
    "quadratic_min": _quadratic_min,
    "dice": _dice,
    "combination": _combination,
    "arithmetic_series": _arithmetic_series,
    "derivative": _derivative,
    "integral": _integral,
    "logarithm": _logarithm,
    "dot_product": _dot_product,
    "complex_product": _complex_product,
    "limit": _limit,
}

_METHODS = {"complex_product": "complex"}


def build_evalset(config: EvalsetConfig) -> list[dict]:
    """Rows in the competition's format, deterministic for a given seed."""
    rng = random.Random(config.seed)
    names = list(config.templates) or list(TEMPLATES)
    rows, seen = [], set()
    for name in names:
        made = 0
        while made < config.per_template:
            category, unit, problem, solution = TEMPLATES[name](rng)
            if problem in seen:  # small coefficient ranges can repeat a problem
                continue
            seen.add(problem)
            made += 1
            rows.append(
                {
                    "id": f"eval-{name}-{made:03d}",
                    "category": category,
                    "unit": unit,
                    "problem": problem,
                    "solution": f"${solution}$",
                    "evaluation_method": _METHODS.get(name, "soft"),
                }
            )
    check_gold(rows)
    return rows


def check_gold(rows: list[dict]) -> None:
    """Every problem's own solution, written boxed as an answer, must grade correct under our grader.

    The official grader never wraps a gold string, so a gold it cannot read (bare LaTeX, a spelling its
    parser drops) would score a right answer wrong; this stops the set from being written instead.
    """
    from ftllm.grade import is_correct

    for row in rows:
        answer = "\\boxed{" + row["solution"].strip().strip("$") + "}"
        if not is_correct(answer, row["solution"], row.get("evaluation_method")):
            raise ValueError(f"evalset: problem {row['id']}: its own solution {row['solution']!r} boxed as "
                             f"{answer!r} grades wrong under evaluation_method "
                             f"{row.get('evaluation_method') or 'soft'}")
def write_evalset(config: EvalsetConfig, out: str | Path) -> dict:
    """The `evalset` stage: build the problems and write them as JSONL; returns their count."""
    from ftllm.io import write_jsonl

    return {"problems": write_jsonl(out, build_evalset(config))}
