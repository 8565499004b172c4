"""Voting speed: a comparison Math-Verify has already answered is not paid for again."""
from __future__ import annotations

import sympy

import ftllm.grade.compare as compare
from ftllm.grade import equivalent


def _counting(monkeypatch) -> list:
    calls = []
    real = compare.mv_verify

    def counted(gold, pred, **kw):
        calls.append((gold, pred))
        return real(gold, pred, **kw)

    monkeypatch.setattr(compare, "mv_verify", counted)
    compare._verify_cached.cache_clear()
    return calls


def test_bracket_variants_reuse_the_same_sympy_comparison(monkeypatch):
    # `(x+1)^{3}` and its bracket-swap variants parse to one power (only the extracted text differs):
    # the number-against-power comparison, the one that can run into the 5 s timeout, happens once
    calls = _counting(monkeypatch)
    assert equivalent("$4$", "$(x+1)^{3}$") is False
    sympy_pairs = [(g, p) for g, p in calls if not isinstance(g[0], str) and not isinstance(p[0], str)]
    assert len(sympy_pairs) == len({(g[0], p[0]) for g, p in sympy_pairs}) == 1


def test_memoised_verify_keeps_the_verdicts():
    compare._verify_cached.cache_clear()
    half, half_f = sympy.Rational(1, 2), sympy.Float(0.5)
    for _ in range(2):  # the second round comes from the memo
        assert compare.verify([half, "1/2"], [half_f, "0.5"])
        assert compare.verify([sympy.Integer(2)], [sympy.Float(2.0)])
        assert not compare.verify([sympy.Integer(2)], [sympy.Integer(3)])
        assert compare.verify(["abc"], ["abc"]) and not compare.verify(["abc"], ["abd"])
        assert compare.verify([sympy.Matrix([1, 2])], [sympy.Matrix([1, 2])])  # unhashable: not memoised
    # 2.0 and 2 are different keys: the memo never answers for a structurally different value
    assert sympy.Float(2.0) != sympy.Integer(2)
    assert compare._verify_cached.cache_info().hits > 0


def test_pair_order_and_short_circuit_follow_math_verify(monkeypatch):
    calls = _counting(monkeypatch)
    assert compare.verify([sympy.Integer(1), sympy.Integer(2)], [sympy.Integer(2), sympy.Integer(3)])
    # product order (1,2), (1,3), (2,2): stops at the first match, as Math-Verify's `any` does
    assert [(g[0], p[0]) for g, p in calls] == [(1, 2), (1, 3), (2, 2)]
