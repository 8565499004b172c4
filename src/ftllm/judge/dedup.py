"""Duplicate removal: exact (hash of the normalised text), then near (MinHash LSH).

The first row in input order wins; later copies are dropped naming the row they
copy. Input order is the sorted shard order, so reruns keep the same rows.
Dedup is global only when the stage sees every shard (see `judge_folder`).
"""
from __future__ import annotations

import dataclasses
import hashlib

from ftllm.judge.filters import Drop
from ftllm.judge.text import ngrams, normalize_text, text_units


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    """Section `judge.dedup`."""

    fields: list[str] = ("problem",)  # text compared; the problem, since each row is its own problem
    exact: bool = True
    near: bool = True
    near_threshold: float = 0.8  # estimated Jaccard similarity of shingle sets that counts as a duplicate
    shingle_size: int = 5  # units (characters for Japanese, words for English) per shingle
    num_perm: int = 128  # MinHash permutations: more = sharper estimate, slower
    seed: int = 1

    def __post_init__(self) -> None:
        if not self.fields:
            raise ValueError("fields must name at least one text field")
        if not 0.0 < self.near_threshold <= 1.0:
            raise ValueError("near_threshold must be in (0, 1]")
        if self.shingle_size < 1 or self.num_perm < 16:
            raise ValueError("shingle_size must be >= 1 and num_perm >= 16")
        if self.near:
            from datasketch import MinHashLSH

            try:  # LSH needs >= 2 bands: a high threshold needs more permutations
                MinHashLSH(threshold=self.near_threshold, num_perm=self.num_perm)
            except ValueError as err:
                raise ValueError(f"near_threshold {self.near_threshold} with num_perm {self.num_perm}: {err}") from None


def _row_text(row: dict, fields) -> str:
    return "\n".join(str(row.get(f) or "") for f in fields)


def find_exact_duplicates(rows: list[dict], config: DedupConfig) -> dict[int, Drop]:
    """Index -> Drop for every row whose normalised text hashes like an earlier row's."""
    first: dict[str, int] = {}
    drops: dict[int, Drop] = {}
    for i, row in enumerate(rows):
        key = hashlib.sha1(normalize_text(_row_text(row, config.fields)).encode()).hexdigest()
        if key in first:
            original = rows[first[key]]
            drops[i] = Drop("exact_duplicate", f"same text as row {original.get('id')}", str(original.get("id")))
        else:
            first[key] = i
    return drops


def find_near_duplicates(rows: list[dict], config: DedupConfig) -> dict[int, Drop]:
    """Index -> Drop for rows whose shingle set is near (MinHash LSH) an earlier kept row's."""
    from datasketch import MinHash, MinHashLSH
    from tqdm.auto import tqdm

    lsh = MinHashLSH(threshold=config.near_threshold, num_perm=config.num_perm)
    kept: dict[int, MinHash] = {}
    drops: dict[int, Drop] = {}
    for i, row in enumerate(tqdm(rows, desc="near-duplicates", disable=len(rows) < 1000)):
        shingles = ngrams(text_units(_row_text(row, config.fields)), config.shingle_size)
        sketch = MinHash(num_perm=config.num_perm, seed=config.seed)
        sketch.update_batch([s.encode() for s in sorted(shingles)])
        # LSH gives candidates; the MinHash estimate confirms them so the threshold means what it says.
        scores = {j: sketch.jaccard(kept[j]) for j in lsh.query(sketch)}
        matches = sorted(j for j, score in scores.items() if score >= config.near_threshold)
        if matches:
            j = matches[0]
            drops[i] = Drop("near_duplicate", f"jaccard~{scores[j]:.2f} with row {rows[j].get('id')}",
                            str(rows[j].get("id")))
            continue
        lsh.insert(i, sketch)
        kept[i] = sketch
    return drops
