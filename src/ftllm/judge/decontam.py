"""Decontamination: drop training rows that share n-grams with any evaluation problem.

Text is normalised (NFKC, lower case, whitespace collapsed) and cut into units,
so Japanese is compared by character n-grams and English by word n-grams. A row
is contaminated when it contains at least `min_shared` of some eval problem's
n-grams (0 = any single shared n-gram, the classic GPT-3 rule). A share, rather
than one hit, keeps short Japanese boilerplate ("次の計算をしなさい") from
flagging every row that happens to start the same way.

Each row is checked on its own against every eval set, so this is exact when the
stage runs per shard.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

from ftllm.judge.filters import Drop
from ftllm.judge.text import ngrams, text_units


@dataclasses.dataclass(frozen=True)
class DecontamConfig:
    """Section `judge.decontam`."""

    ngram: int = 8
    min_shared: float = 0.5  # share of an eval problem's n-grams found in the row; 0 = any one n-gram
    fields: list[str] = ("problem", "solution")  # row text searched for eval n-grams
    eval_fields: list[str] = ("problem",)  # eval text whose n-grams count

    def __post_init__(self) -> None:
        if self.ngram < 1:
            raise ValueError("ngram must be >= 1")
        if not 0.0 <= self.min_shared <= 1.0:
            raise ValueError("min_shared must be in [0, 1]")


class EvalIndex:
    """Inverted index n-gram -> eval problems, built once from every eval set."""

    def __init__(self, eval_rows: list[dict], config: DecontamConfig):
        self.config = config
        self.sizes: dict[str, int] = {}
        self.postings: dict[str, list[str]] = defaultdict(list)
        for row in eval_rows:
            eval_id = str(row.get("id"))
            text = "\n".join(str(row.get(f) or "") for f in config.eval_fields)
            grams = ngrams(text_units(text), config.ngram)
            if not grams:
                continue
            self.sizes[eval_id] = len(grams)
            for gram in grams:
                self.postings[gram].append(eval_id)

    def find(self, row: dict) -> Drop | None:
        """The worst-matching eval problem, if the row shares enough of its n-grams."""
        text = "\n".join(str(row.get(f) or "") for f in self.config.fields)
        shared: dict[str, int] = defaultdict(int)
        for gram in ngrams(text_units(text), self.config.ngram):
            for eval_id in self.postings.get(gram, ()):
                shared[eval_id] += 1
        if not shared:
            return None
        share, eval_id = max((count / self.sizes[e], e) for e, count in shared.items())
        if share >= self.config.min_shared and share > 0:
            return Drop("contaminated", f"shares {share:.0%} of eval {eval_id}'s {self.config.ngram}-grams", eval_id)
        return None


def read_eval_sets(paths: list[Path]) -> list[dict]:
    """Rows of every eval set (JSONL or Parquet); ids are prefixed by the file stem when sets collide."""
    from ftllm.io import read_records

    rows: list[dict] = []
    seen: set[str] = set()
    for path in paths:
        for row in read_records(path, required=("id", "problem")):
            eval_id = str(row["id"])
            if eval_id in seen:
                eval_id = f"{Path(path).stem}:{eval_id}"
            seen.add(eval_id)
            rows.append({**row, "id": eval_id})
    return rows
