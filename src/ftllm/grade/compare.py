"""Equality of two parsed answers under an evaluation method, with the grader's fallbacks.

`verify` (Math-Verify) is non-symmetric: the gold goes first. Timeouts rely on SIGALRM, so they
are only armed in the main thread; elsewhere the caller (a worker process) must bound the time.
"""
from __future__ import annotations

import random
import threading
from decimal import ROUND_HALF_UP, Decimal

import sympy
from math_verify import verify
from math_verify.utils import timeout as _alarm
from sympy import Basic, MatrixBase

from ftllm.grade import rewrite


def arm(timeout_s: int | None) -> int | None:
    """The timeout to pass to Math-Verify: signals only work in the main thread."""
    return timeout_s if threading.current_thread() is threading.main_thread() else None


def guarded(fn, timeout_s: int | None, *args):
    """Run our own SymPy work under the same alarm Math-Verify uses; any failure is a False."""
    try:
        return _alarm(arm(timeout_s))(fn)(*args)
    except BaseException as err:  # TimeoutException derives from BaseException
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        return False


def sympy_items(parsed: list) -> list:
    return [p for p in parsed if isinstance(p, (Basic, MatrixBase))]


# --- strict: the same SymPy tree ------------------------------------------------------------

def same_tree(gold: list, pred: list, timeout_s: int | None) -> bool:
    def check():
        golds = {sympy.srepr(g) for g in sympy_items(gold)}
        return any(sympy.srepr(p) in golds for p in sympy_items(pred))

    return bool(golds_or_strings(gold, pred) or guarded(check, timeout_s))


def golds_or_strings(gold: list, pred: list) -> bool:
    """Both sides unparseable as math: Math-Verify falls back to comparing the matched strings."""
    gs = [g.strip() for g in gold if isinstance(g, str) and g.strip()]
    ps = [p.strip() for p in pred if isinstance(p, str) and p.strip()]
    return not sympy_items(gold) and not sympy_items(pred) and bool(set(gs) & set(ps))


# --- soft: value equality ----------------------------------------------------------------

def same_value(gold: list, pred: list, timeout_s: int | None, set_relation: bool = False) -> bool:
    if not gold or not pred:
        return False
    return verify(gold, pred, timeout_seconds=arm(timeout_s), allow_set_relation_comp=set_relation)


def vectors_as_tuples(parsed: list) -> list:
    """A column or row vector is the same list of elements as a tuple."""
    out = []
    for p in parsed:
        if isinstance(p, MatrixBase) and 1 in p.shape:
            p = sympy.Tuple(*list(p))
        out.append(p)
    return out


def intervals_as_tuples(parsed: list) -> list:
    """`(a, b)` read as an open interval (or an empty one when a > b) is re-read as a tuple."""
    out = []
    for p in parsed:
        if isinstance(p, sympy.Interval) and p.left_open and p.right_open:
            p = sympy.Tuple(p.start, p.end)
        out.append(p)
    return out


def relations_as_set(parsed: list) -> list:
    """`x < -1, x > 1` (a list of inequalities in one variable, "or" already made a comma) as the union of their sets.

    Solving can be slow or raise: call it under `guarded`.
    """
    out = []
    for p in parsed:
        if isinstance(p, (sympy.FiniteSet, sympy.Tuple)) and len(p.args) > 1:
            rels = list(p.args)
            symbols = set().union(*(r.free_symbols for r in rels if isinstance(r, Basic)))
            if len(symbols) == 1 and all(isinstance(r, (sympy.core.relational.Relational, sympy.And)) for r in rels):
                p = sympy.Union(*(r.as_set() for r in rels))
        out.append(p)
    return out


def relation_atoms(expr) -> list | None:
    """Inequalities normalised to `(lhs - rhs, op)` with op in {>, >=, =}; None if not all relations."""
    if isinstance(expr, sympy.And) or isinstance(expr, (sympy.FiniteSet, sympy.Tuple)):
        parts = list(expr.args)
    else:
        parts = [expr]
    atoms = []
    for rel in parts:
        strict = isinstance(rel, (sympy.StrictGreaterThan, sympy.StrictLessThan))
        if isinstance(rel, (sympy.StrictGreaterThan, sympy.GreaterThan)):
            atoms.append((rel.lhs - rel.rhs, ">" if strict else ">="))
        elif isinstance(rel, (sympy.StrictLessThan, sympy.LessThan)):
            atoms.append((rel.rhs - rel.lhs, ">" if strict else ">="))
        elif isinstance(rel, sympy.Eq):
            atoms.append((rel.lhs - rel.rhs, "="))
        elif isinstance(rel, sympy.And):
            atoms.extend(relation_atoms(rel) or [(None, "?")])
        else:
            return None
    return atoms if all(a is not None for a, _ in atoms) else None


def same_atoms(gold: list, pred: list, timeout_s: int | None) -> bool:
    """Sets of inequalities compared atom by atom (`x>1, x<3` vs `1<x<3`)."""

    def atom_eq(a, b) -> bool:
        (da, oa), (db, ob) = a, b
        if oa != ob:
            return False
        ratio = sympy.simplify(da / db) if db != 0 else None
        return ratio is not None and ratio.is_number and (ratio > 0 if oa != "=" else ratio != 0)

    def check():
        for g in sympy_items(gold):
            ga = relation_atoms(g)
            for p in sympy_items(pred):
                pa = relation_atoms(p)
                if ga and pa and len(ga) == len(pa):
                    if all(any(atom_eq(x, y) for y in pa) for x in ga) and all(any(atom_eq(y, x) for x in ga) for y in pa):
                        return True
        return False

    return bool(guarded(check, timeout_s))


def rounds_to(gold_text: str, gold: list, pred_text: str, pred: list, timeout_s: int | None) -> bool:
    """A decimal on either side equals the other side rounded to the decimal's places (`0.333` vs `1/3`)."""

    def one_way(dec_text: str, other: list) -> bool:
        places = rewrite.decimal_places(dec_text)
        if places is None:
            return False
        target = Decimal(dec_text.strip().strip("$").strip())
        for expr in sympy_items(other):
            if isinstance(expr, Basic) and expr.is_number and expr.is_real is not False:
                value = Decimal(str(sympy.N(expr, places + 15)))
                if value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP) == target:
                    return True
        return False

    return bool(guarded(lambda: one_way(gold_text, pred) or one_way(pred_text, gold), timeout_s))


# --- complex: i is the imaginary unit ----------------------------------------------------

def with_imaginary_unit(parsed: list, evaluate: bool = True) -> list:
    """`i` replaced by `I`; `evaluate=False` keeps the written tree (complex-strict: `i^2` stays `I**2`, not -1)."""
    out = []
    for p in parsed:
        if isinstance(p, (Basic, MatrixBase)):
            # names decide identity: a complex-read side has `theta` without the real=True assumption
            subs = {s: sympy.I if s.name == "i" else sympy.Symbol(s.name) for s in p.free_symbols if isinstance(s, sympy.Symbol)}
            with sympy.evaluate(evaluate):
                p = p.xreplace(subs)
        out.append(p)
    return out


def same_complex_value(gold: list, pred: list, timeout_s: int | None) -> bool:
    """Direct check, then a numeric one at random points (Euler identities hold numerically)."""
    gold, pred = with_imaginary_unit(gold), with_imaginary_unit(pred)
    if same_value(gold, pred, timeout_s):
        return True

    def numeric():
        rng = random.Random(0)
        for g in sympy_items(gold):
            for p in sympy_items(pred):
                if not (isinstance(g, sympy.Expr) and isinstance(p, sympy.Expr)):
                    continue
                symbols = sorted(g.free_symbols | p.free_symbols, key=str)
                if all(_close(g, p, {s: rng.uniform(0.2, 1.4) for s in symbols}) for _ in range(3)):
                    return True
        return False

    return bool(guarded(numeric, timeout_s))


def _close(g, p, point: dict) -> bool:
    a, b = complex(sympy.N(g.subs(point), 30)), complex(sympy.N(p.subs(point), 30))
    return abs(a - b) <= 1e-9 * (1 + abs(a))
