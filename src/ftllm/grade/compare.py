"""Parsing and comparison of the grader (grader.md §6.12, §7-§9): Math-Verify decides, the fallbacks follow it.

`parse`/`verify` are Math-Verify's own, under their 5 s alarm (SIGALRM, so armed only in the main thread; a
worker elsewhere is bounded by its pool). The grader's own SymPy work has no time limit in the official tool;
here it runs under the same alarm, and a timeout only fails that one stage.
"""
from __future__ import annotations

import functools
import itertools
import re
import threading

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig
from math_verify import parse as mv_parse
from math_verify import verify as mv_verify
from math_verify.parser import NormalizationConfig
from math_verify.utils import timeout as _alarm
from sympy import Basic, MatrixBase

from ftllm.grade import rewrite

MAX_PLUS_MINUS = 6  # 2^k parses; the official tool has no cap, ours keeps hostile text bounded


def extraction_config() -> list:
    """§0: LaTeX (units off, every box, no equation splitting) plus plain expressions."""
    return [
        LatexExtractionConfig(
            normalization_config=NormalizationConfig(
                basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="all", equations=False
            )
        ),
        ExprExtractionConfig(),
    ]


_CONFIG = extraction_config()


def arm(timeout_s: int | None) -> int | None:
    """The timeout to pass to Math-Verify: signals only work in the main thread."""
    return timeout_s if threading.current_thread() is threading.main_thread() else None


def guarded(fn, timeout_s: int | None, *args):
    """Our own SymPy work under the same alarm Math-Verify uses; any failure or timeout is False."""
    try:
        return _alarm(arm(timeout_s))(fn)(*args)
    except BaseException as err:  # TimeoutException derives from BaseException
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        return False


def sympy_items(parsed: list) -> list:
    return [p for p in parsed if isinstance(p, (Basic, MatrixBase))]


def is_math(x) -> bool:
    return isinstance(x, (Basic, MatrixBase))


@functools.lru_cache(maxsize=8192)
def _parse_cached(s: str, timeout_s: int | None) -> tuple:
    try:
        return tuple(mv_parse(s, extraction_config=_CONFIG, parsing_timeout=timeout_s))
    except BaseException as err:  # a timeout is a BaseException
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        return ()


def parse(s: str, timeout_s: int | None = 5) -> list:
    """§0 parse(s): `[value, extracted_text]`, `[text]` when nothing parsed, `[]` when nothing matched."""
    return list(_parse_cached(s, arm(timeout_s)))


def verify(gold: list, pred: list, timeout_s: int | None = 5) -> bool:
    """§0 verify(g, p), gold first: every element against every element, 5 s per pair.

    Math-Verify's verify is `any` over the element pairs in `product(gold, pred)` order, each pair under
    its own alarm; so is this, with each pair's verdict memoised on the values (SymPy `==` is structural:
    `2.0` and `2` are different keys). The soft stages ask about the same pair again whenever a rewrite
    parses back to the same value (the bracket variants of `(…)^{7}` all read as the same power, only
    their extracted text differs), and a pair that times out would cost its 5 s every time.
    Unhashable values (mutable matrices) are compared afresh.
    """
    if not gold or not pred:
        return False
    armed = arm(timeout_s)
    return any(_verify_pair(g, t, armed) for g, t in itertools.product(gold, pred))


def _verify_pair(g, t, timeout_s: int | None) -> bool:
    try:
        hash((g, t))
    except TypeError:
        return _verify_one(g, t, timeout_s)
    return _verify_cached(g, t, timeout_s)


def _verify_one(g, t, timeout_s: int | None) -> bool:
    try:
        return bool(mv_verify([g], [t], timeout_seconds=timeout_s))
    except BaseException as err:
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        return False


_verify_cached = functools.lru_cache(maxsize=16384, typed=True)(_verify_one)


# --- §6.12: the extended parse ----------------------------------------------------------------

_PM = re.compile(r"\\(?:pm|mp)(?![A-Za-z])")
_EMPTY_WORD = re.compile(r"\\emptyset|\\varnothing|\\empty(?![A-Za-z])")
_OUTER = (("\\[", "\\]"), ("\\(", "\\)"), ("$$", "$$"), ("$", "$"))
_NAME_CALL = re.compile(r"^[A-Za-z]\w*\s*\((.*)\)$", re.S)


def extended_parse(s: str, timeout_s: int | None = 5) -> list:
    """EP(s): §6's rewrites, then parse; `\\pm`/`\\mp` expanded; an empty set re-read as a tuple."""
    s = rewrite.ep_text(s)
    signs = list(_PM.finditer(s))
    if not signs:
        result = parse(s, timeout_s)
        if result and result[0] == sympy.EmptySet and not _EMPTY_WORD.search(s):
            return _as_tuple(s, timeout_s) or result
        return result
    if len(signs) > MAX_PLUS_MINUS:
        return []
    equations, values = [], []
    for combo in itertools.product("+-", repeat=len(signs)):
        it = iter(combo)
        parsed = parse(_PM.sub(lambda m, it=it: next(it), s), timeout_s)
        if not parsed:
            continue
        first = parsed[0]
        if isinstance(first, sympy.Eq):
            equations.append(first)
        elif isinstance(first, (sympy.FiniteSet, sympy.Tuple, list, tuple, set)):
            values.extend(v for v in first if v not in values)
        elif first not in values:
            values.append(first)
    if not values and equations and len({e.lhs for e in equations}) == 1:
        rhs = []
        for e in equations:
            for v in (e.rhs if isinstance(e.rhs, sympy.FiniteSet) else [e.rhs]):
                if v not in rhs:
                    rhs.append(v)
        return [sympy.Eq(equations[0].lhs, sympy.FiniteSet(*rhs), evaluate=False)]
    if values:
        return [sympy.FiniteSet(*values)]
    return parse(s, timeout_s)


def _as_tuple(s: str, timeout_s: int | None) -> list | None:
    """`(\\frac{u}{v}, \\frac{u}{v})` read as an empty interval: the parts as a Tuple instead."""
    inner = s.strip()
    for left, right in _OUTER:
        if inner.startswith(left) and inner.endswith(right) and len(inner) >= len(left) + len(right):
            inner = inner[len(left) : len(inner) - len(right)].strip()
            break
    if inner.startswith("\\boxed{") and inner.endswith("}"):
        inner = inner[len("\\boxed{") : -1].strip()
    call = _NAME_CALL.match(inner)
    if call:
        inner = call.group(1)
    elif inner[:1] in "([" and inner[-1:] in ")]":
        inner = inner[1:-1]
    parts = rewrite.split_top_level(inner)
    if len(parts) < 2:
        return None
    values = []
    for part in parts:
        parsed = parse(f"${part}$", timeout_s)
        if not parsed or not is_math(parsed[0]):
            return None
        values.append(parsed[0])
    return [sympy.Tuple(*values), inner]


# --- §7.2: matrix against tuple -------------------------------------------------------------

def _flat(x) -> list | None:
    if isinstance(x, MatrixBase):
        return list(x) if 1 in x.shape else None
    if isinstance(x, sympy.Tuple):
        return list(x)
    if isinstance(x, sympy.Interval):
        return [x.start, x.end]
    return None


def matrix_tuple(g: list, p: list, timeout_s: int | None) -> bool:
    if not g or not p or not (isinstance(g[0], MatrixBase) or isinstance(p[0], MatrixBase)):
        return False
    gs, ps = _flat(g[0]), _flat(p[0])
    if gs is None or ps is None or len(gs) != len(ps):
        return False
    return all(verify([pk], [gk], timeout_s) for pk, gk in zip(ps, gs))  # prediction first, as the grader does


# --- §7.3 / §11.3: inequalities --------------------------------------------------------------

_RELATION = (sympy.core.relational.Relational,)


def _relation_set(x) -> list | None:
    """Members of a comma set whose members are all relations or conjunctions of them, else None."""
    if not isinstance(x, sympy.FiniteSet) or len(x) == 0:
        return None
    members = list(x.args)
    return members if all(_atoms(m) is not None for m in members) else None


def _atoms(x) -> list | None:
    if isinstance(x, sympy.And):
        out = []
        for a in x.args:
            sub = _atoms(a)
            if sub is None:
                return None
            out += sub
        return out
    return [x] if isinstance(x, _RELATION) else None


def _atom_key(rel) -> tuple:
    diff = sympy.simplify(rel.lhs - rel.rhs)
    if isinstance(rel, (sympy.StrictLessThan, sympy.LessThan)):
        diff = -diff
    return diff, isinstance(rel, (sympy.StrictLessThan, sympy.StrictGreaterThan))


def inequality_atoms(g: list, p: list, timeout_s: int | None) -> bool:
    """§11.3 atom match: both sides comma sets of relations, compared as sets of (difference, strict?)."""
    gm, pm = (_relation_set(x[0]) if x else None for x in (g, p))
    if gm is None or pm is None:
        return False
    ga = [a for m in gm for a in _atoms(m)]
    pa = [a for m in pm for a in _atoms(m)]
    if len(ga) != len(pa):
        return False
    return bool(guarded(lambda: {_atom_key(a) for a in ga} == {_atom_key(a) for a in pa}, timeout_s))


def _ray(rel, sym):
    """`x > a` (or `a < x`) as an interval in `sym`; None when `sym` is not alone on one side."""
    if isinstance(rel, sympy.Eq):
        if rel.lhs == sym and sym not in rel.rhs.free_symbols:
            return sympy.FiniteSet(rel.rhs)
        if rel.rhs == sym and sym not in rel.lhs.free_symbols:
            return sympy.FiniteSet(rel.lhs)
        return None
    if not isinstance(rel, (sympy.StrictGreaterThan, sympy.GreaterThan, sympy.StrictLessThan, sympy.LessThan)):
        return None
    strict = isinstance(rel, (sympy.StrictGreaterThan, sympy.StrictLessThan))
    greater = isinstance(rel, (sympy.StrictGreaterThan, sympy.GreaterThan))
    if rel.lhs == sym and sym not in rel.rhs.free_symbols:
        bound = rel.rhs
    elif rel.rhs == sym and sym not in rel.lhs.free_symbols:
        bound, greater = rel.lhs, not greater
    else:
        return None
    if greater:
        return sympy.Interval(bound, sympy.oo, left_open=strict)
    return sympy.Interval(-sympy.oo, bound, right_open=strict)


def _converted(members: list) -> list | None:
    """§11.3 interval conversion of one side's comma set: [union, intersection]; None when it cannot."""
    atoms = [a for m in members for a in _atoms(m)]
    symbols = [a.free_symbols for a in atoms]
    if all(len(s) == 1 for s in symbols) and len(set().union(*symbols)) == 1:
        sets = [m.as_set() for m in members]
    else:
        sets = None
        for sym in sorted(set.intersection(*map(set, symbols)), key=lambda s: s.name):
            rays = [[_ray(a, sym) for a in _atoms(m)] for m in members]
            if all(r is not None for rs in rays for r in rs):
                sets = [sympy.Intersection(*rs) for rs in rays]
                break
        if sets is None:
            return None
    out = [sympy.Union(*sets)]
    if len(sets) >= 2:
        both = sympy.Intersection(*sets)
        if both != sympy.EmptySet:
            out.append(both)
    return out


def inequality_intervals(g: list, p: list, timeout_s: int | None) -> bool:
    """§11.3 interval conversion: a comma set of relations against the other side's value, as sets."""
    if not g or not p:
        return False
    gm, pm = _relation_set(g[0]), _relation_set(p[0])
    gc = guarded(lambda: _converted(gm), timeout_s) if gm is not None else None
    pc = guarded(lambda: _converted(pm), timeout_s) if pm is not None else None
    gc, pc = gc or None, pc or None
    if gc is None and pc is None:
        return False
    gc, pc = gc or [g[0]], pc or [p[0]]
    return any(verify([a], [b], timeout_s) for a in gc for b in pc)


# --- §7.10: decimal rounding ------------------------------------------------------------------

def decimal_rounding(g: list, p: list, timeout_s: int | None) -> bool:
    texts = [x[1] for x in (g, p) if len(x) > 1 and isinstance(x[1], str)]
    places = [len(d.split(".")[1]) for t in texts for d in rewrite.DECIMAL.findall(t)]
    if not places or not g or not p:
        return False
    d = min(places)

    def check() -> bool:
        a, b = g[0], p[0]
        if isinstance(a, sympy.FiniteSet) and isinstance(b, sympy.FiniteSet):
            if len(a) != len(b):
                return False
            xs, ys = sorted(float(v) for v in a), sorted(float(v) for v in b)
            return all(round(x, d) == round(y, d) for x, y in zip(xs, ys))
        return round(float(a), d) == round(float(b), d)

    return bool(guarded(check, timeout_s))


# --- §8: strict --------------------------------------------------------------------------------

def same_tree(g: list, p: list, raw_g: str, raw_p: str, timeout_s: int | None) -> bool:
    """§8.1-8.2: srepr of the first elements; only when that raises, latex2sympy on the raw strings."""
    try:
        return sympy.srepr(p[0]) == sympy.srepr(g[0])
    except Exception:
        pass

    def raw() -> bool:
        from latex2sympy2_extended import latex2sympy

        a, b = (latex2sympy(x.strip().strip("$")) for x in (raw_p, raw_g))
        return sympy.srepr(a) == sympy.srepr(b)

    return bool(guarded(raw, timeout_s))


# --- §9: complex -------------------------------------------------------------------------------

def with_i(x):
    """The free symbol named `i` as the imaginary unit; raises on a non-SymPy value, as the grader does."""
    return x.subs({s: sympy.I for s in x.free_symbols if getattr(s, "name", None) == "i"})


def complex_equal(g0, p0, timeout_s: int | None) -> bool:
    """§9 steps 3-4: verify, then SymPy's numeric identity test with the prediction's assumptions."""
    if verify([g0], [p0], timeout_s):
        return True

    def numeric() -> bool:
        assumed = {s.name: s for s in p0.free_symbols if isinstance(s, sympy.Symbol)}
        g = g0.xreplace({s: assumed[s.name] for s in g0.free_symbols
                         if isinstance(s, sympy.Symbol) and s.name in assumed})
        return p0.equals(g) is True

    return bool(guarded(numeric, timeout_s))
