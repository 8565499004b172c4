"""Text normalisation shared by dedup and decontamination.

Both compare problems written by different hands (the teacher, the eval set), so
they first fold the surface differences away: NFKC (full-width digits and
letters become ASCII), lower case, whitespace collapsed. Text is then cut into
units: a run of ASCII letters/digits is one unit, every other visible character
(a kanji, a kana, an operator) is a unit of its own. Japanese text therefore
yields character n-grams and English text word n-grams, with no language switch.
"""
from __future__ import annotations

import re
import unicodedata

_SPACE = re.compile(r"\s+")
_UNIT = re.compile(r"[0-9a-z]+|\S")
# Math spans are not language: they are left out when measuring the Japanese share.
_MATH = re.compile(r"\$\$.*?\$\$|\$.*?\$|\\\(.*?\\\)|\\\[.*?\\\]", re.S)
_JAPANESE = re.compile(r"[\u3001-\u303f\u3040-\u309f\u30a0-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f々〆ー]")


def normalize_text(text: str) -> str:
    """NFKC, lower case, whitespace collapsed to single spaces."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text or "").lower()).strip()


def text_units(text: str) -> list[str]:
    """Normalised text cut into comparison units (ASCII words, single other characters)."""
    return _UNIT.findall(normalize_text(text))


def ngrams(units: list[str], n: int) -> set[str]:
    """All n-grams of `units` joined by a separator; a text shorter than n gives itself as one gram."""
    if not units:
        return set()
    if len(units) < n:
        return {"\x1f".join(units)}
    return {"\x1f".join(units[i : i + n]) for i in range(len(units) - n + 1)}


def japanese_share(text: str) -> float:
    """Share of Japanese characters (kana, kanji) among the visible characters outside math spans."""
    prose = _SPACE.sub("", _MATH.sub("", unicodedata.normalize("NFKC", text or "")))
    if not prose:
        return 0.0
    return len(_JAPANESE.findall(prose)) / len(prose)


LANGUAGE_SHARE = {"ja": japanese_share}  # language code -> share function; extend here for others
