"""The condition grid and its deterministic split into shards.

A *cell* is one condition (category, unit, difficulty, tool use). Each cell asks
for `samples_per_cell` problems; one (cell, sample index) pair is an *item*. Items
are laid out in a fixed order (fields as listed, then difficulty, then tool use,
then sample index) and cut into shards of `shard_size` consecutive items, so the
same params always give the same shards, the same per-shard seeds and the same
row ids, on any machine, whatever was generated before.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable

# Japanese curriculum units (学習指導要領), grouped the way the competition's
# categories are (中1, 中2, 中3, IA, IIB, IIIC).
CURRICULUM: dict[str, tuple[str, ...]] = {
    "中1": ("正負の数", "文字と式", "一次方程式", "比例と反比例", "平面図形", "空間図形", "データの活用"),
    "中2": ("式の計算", "連立方程式", "一次関数", "図形の性質と合同", "三角形と四角形", "確率"),
    "中3": ("式の展開と因数分解", "平方根", "二次方程式", "関数y=ax^2", "相似な図形", "円", "三平方の定理", "標本調査"),
    "IA": ("数と式", "集合と命題", "二次関数", "図形と計量", "データの分析", "場合の数と確率", "整数の性質",
           "図形の性質"),
    "IIB": ("式と証明", "複素数と方程式", "図形と方程式", "三角関数", "指数関数と対数関数", "微分", "積分", "数列",
            "統計的な推測"),
    "IIIC": ("極限", "微分法", "積分法", "ベクトル", "平面上の曲線", "複素数平面"),
}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One generation condition."""

    category: str
    unit: str
    difficulty: int
    tool_use: bool

    @property
    def key(self) -> str:
        """Readable, stable name used in metrics and rows."""
        tool = "tool" if self.tool_use else "notool"
        return f"{self.category}/{self.unit}/d{self.difficulty:02d}/{tool}"


@dataclasses.dataclass(frozen=True)
class Item:
    """One prompt to send: sample `sample` of `cell`."""

    cell: Cell
    sample: int
    id: str


def build_grid(fields: dict[str, Iterable[str]], difficulties: Iterable[int], tool_use: Iterable[bool]) -> list[Cell]:
    """Every combination, in params order (the order fixes shard contents, so it never sorts)."""
    return [
        Cell(category, unit, int(difficulty), bool(tool))
        for category, units in fields.items()
        for unit in units
        for difficulty in difficulties
        for tool in tool_use
    ]


def row_id(seed: int, cell: Cell, sample: int) -> str:
    """Id that depends only on the condition, the sample index and the global seed."""
    parts = [str(seed), cell.category, cell.unit, str(cell.difficulty), str(int(cell.tool_use)), str(sample)]
    text = "\x1f".join(parts)
    return "g" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def build_items(cells: list[Cell], samples_per_cell: int, seed: int) -> list[Item]:
    return [Item(cell, j, row_id(seed, cell, j)) for cell in cells for j in range(samples_per_cell)]


def split_shards(items: list[Item], shard_size: int) -> list[list[Item]]:
    return [items[start : start + shard_size] for start in range(0, len(items), shard_size)]


def shard_seed(seed: int, shard: int) -> int:
    """Each shard's sampling seed: a hash of (global seed, shard index), so shards are independent streams."""
    digest = hashlib.sha256(f"generate-shard:{seed}:{shard}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def owned_shards(total: int, index: int, count: int) -> list[int]:
    """Shards that worker `index` of `count` runs: round robin, so workers get equal loads with no coordination."""
    return [k for k in range(total) if k % count == index]


def parse_shard_option(value: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {value!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard i/n needs 0 <= i < n, got {value!r}")
    return index, count


def group_by_cell(items: list[Item]) -> list[list[Item]]:
    """Runs of consecutive items sharing a cell (one prompt, sampled len(run) times)."""
    groups: list[list[Item]] = []
    for item in items:
        if groups and groups[-1][0].cell == item.cell:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups
