"""Curation of the teacher's rows: cheap filters first, the LLM judge last.

    from ftllm.judge import JudgeConfig, run_judge
    result = run_judge(config, raw=Path("data/raw"), evals=[Path("data/eval/problems.jsonl")],
                       out=Path("data/judged"))

Order (each dropped row gets the reason of the first step that drops it):

1. format: required fields non-empty, answer parseable by Math-Verify (`missing_field`, `answer_unparseable`)
2. length and language bounds (`too_short`, `too_long`, `wrong_language`)
3. exact duplicates of the normalised problem (`exact_duplicate`)
4. near duplicates by MinHash LSH (`near_duplicate`)
5. n-gram overlap with any eval set (`contaminated`, with the eval id)
6. LLM-as-judge verdict, one batched call (`judge_inconsistent`, `judge_ill_posed`, `judge_error`)
7. optional answer agreement over k re-solves (`answer_disagreement`)

Steps 3-4 are global only over the rows one run sees: run unsharded for a
globally deduplicated set. Steps 1-2 and 5-7 look at one row at a time, so
per-shard runs (`shard=(i, n)`) give the same verdicts for them.
"""
from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ftllm.config import EngineSpec, SamplingSpec
from ftllm.judge.agreement import AgreementConfig, agreement_shares
from ftllm.judge.decontam import DecontamConfig, EvalIndex, read_eval_sets
from ftllm.judge.dedup import DedupConfig, find_exact_duplicates, find_near_duplicates
from ftllm.judge.filters import Drop, FilterConfig, filter_row
from ftllm.judge.verdict import LABELS, Verdict, judge_rows

# Every reason a row can be dropped for, in pipeline order (metrics list them all, zeros included).
DROP_REASONS = (
    "missing_field", "answer_unparseable", "too_short", "too_long", "wrong_language",
    "exact_duplicate", "near_duplicate", "contaminated",
    "judge_inconsistent", "judge_ill_posed", "judge_error", "answer_disagreement",
)
REQUIRED_COLUMNS = ("id", "problem", "solution", "answer")
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    """Params section `judge`."""

    engine: EngineSpec | None = None  # the judge model; needed when llm_judge or agreement.enabled
    # temperature 0 so reruns give the same verdicts
    sampling: SamplingSpec = SamplingSpec(temperature=0.0, max_new_tokens=256, seed=0)
    llm_judge: bool = True
    keep_verdicts: list[str] = ("consistent",)  # labels kept: consistent | inconsistent | ill_posed
    keep_judge_errors: bool = False  # keep rows whose judge reply did not parse
    max_solution_chars: int = 6000  # longer solutions are cut (head + tail) in the judge prompt
    chat_template_kwargs: dict = dataclasses.field(default_factory=dict)  # e.g. {reasoning_effort: low}
    filters: FilterConfig = FilterConfig()
    dedup: DedupConfig = DedupConfig()
    decontam: DecontamConfig = DecontamConfig()
    agreement: AgreementConfig = AgreementConfig()

    def __post_init__(self) -> None:
        unknown = [v for v in self.keep_verdicts if v not in LABELS]
        if unknown:
            raise ValueError(f"keep_verdicts: unknown label(s) {unknown}; known: {list(LABELS)}")
        if self.engine is None and (self.llm_judge or self.agreement.enabled):
            raise ValueError("engine is required when llm_judge is true or agreement.enabled is true")
        if self.max_solution_chars < 100:
            raise ValueError("max_solution_chars must be >= 100")


@dataclasses.dataclass
class Curation:
    """What the judge stage produces: kept rows, dropped rows, flat metrics, coverage plot rows."""

    kept: list[dict]
    dropped: list[dict]
    metrics: dict
    coverage: list[dict]


def _drop_all(status: list, alive: list[int], drops: dict[int, Drop]) -> None:
    """Record drops found on the sub-list `alive` (indices local to it) against the full row list."""
    for local, drop in drops.items():
        status[alive[local]] = drop


def _alive(status: list) -> list[int]:
    return [i for i, s in enumerate(status) if s is None]


def _run_cheap_filters(rows: list[dict], eval_rows: list[dict], config: JudgeConfig, status: list) -> None:
    from tqdm.auto import tqdm

    for i, row in enumerate(tqdm(rows, desc="format/length/language", disable=len(rows) < 1000)):
        status[i] = filter_row(row, config.filters)
    log.info("%d of %d rows pass format, length and language", len(_alive(status)), len(rows))
    if config.dedup.exact:
        alive = _alive(status)
        _drop_all(status, alive, find_exact_duplicates([rows[i] for i in alive], config.dedup))
    if config.dedup.near:
        alive = _alive(status)
        _drop_all(status, alive, find_near_duplicates([rows[i] for i in alive], config.dedup))
    log.info("%d rows left after deduplication", len(_alive(status)))
    index = EvalIndex(eval_rows, config.decontam)
    for i in tqdm(_alive(status), desc="decontamination", disable=len(rows) < 1000):
        status[i] = index.find(rows[i])
    log.info("%d rows left after decontamination against %d eval problems", len(_alive(status)), len(eval_rows))


def _run_model_checks(rows: list[dict], config: JudgeConfig, status: list, notes: list[dict],
                      engine_factory: Callable) -> int:
    """LLM verdicts, then answer agreement, each one batched call over the rows still alive; returns the
    tokens the model generated."""
    from ftllm.engine.base import CountTokens

    alive = _alive(status)
    if not alive or not (config.llm_judge or config.agreement.enabled):
        return 0
    engine = CountTokens(engine_factory(config.engine))
    try:
        if config.llm_judge:
            verdicts = judge_rows(engine, [rows[i] for i in alive], config.sampling, config.max_solution_chars,
                                  config.chat_template_kwargs)
            for i, verdict in zip(alive, verdicts):
                notes[i]["verdict"] = verdict
                status[i] = _verdict_drop(verdict, config)
        alive = _alive(status)
        if config.agreement.enabled and alive:
            shares = agreement_shares(engine, [rows[i] for i in alive], config.agreement, config.chat_template_kwargs)
            for i, share in zip(alive, shares):
                notes[i]["agreement"] = share
                if share < config.agreement.min_agreement:
                    status[i] = Drop("answer_disagreement", f"{share:.0%} of {config.agreement.k} re-solves agree")
    finally:
        close = getattr(engine.engine, "close", None)
        if close:
            close()
    return engine.tokens


def _verdict_drop(verdict: Verdict, config: JudgeConfig) -> Drop | None:
    if verdict.label is None:
        return None if config.keep_judge_errors else Drop("judge_error", verdict.reason)
    if verdict.label in config.keep_verdicts:
        return None
    return Drop(f"judge_{verdict.label}", verdict.reason)


def curate(rows: list[dict], eval_rows: list[dict], config: JudgeConfig, engine_factory: Callable | None = None
           ) -> Curation:
    """Judge `rows` (generate's output) against `eval_rows` (every eval set); pure apart from the engine."""
    if engine_factory is None:
        from ftllm.engine import make_engine as engine_factory
    status: list[Drop | None] = [None] * len(rows)
    notes: list[dict] = [{} for _ in rows]
    _run_cheap_filters(rows, eval_rows, config, status)
    tokens = _run_model_checks(rows, config, status, notes, engine_factory)

    kept, dropped = [], []
    for row, drop, note in zip(rows, status, notes):
        verdict = note.get("verdict")
        extra = {}
        if "agreement" in note:
            extra["agreement"] = note["agreement"]
        if drop is None:
            label = "unjudged" if verdict is None else (verdict.label or "judge_error")
            kept.append({**row, "verdict": label, "reason": verdict.reason if verdict else "", **extra})
        else:
            dropped.append({**row, "drop_reason": drop.reason, "drop_detail": drop.detail, "match_id": drop.match_id,
                            **extra})
    metrics = {**_metrics(rows, kept, dropped, notes), "tokens_generated": tokens}
    return Curation(kept, dropped, metrics, _coverage(rows, kept))


def _metrics(rows: list[dict], kept: list[dict], dropped: list[dict], notes: list[dict]) -> dict:
    reasons = Counter(r["drop_reason"] for r in dropped)
    verdicts = [n["verdict"] for n in notes if "verdict" in n]
    metrics = {"input_rows": len(rows), "kept": len(kept), "dropped": len(dropped)}
    metrics.update({f"drop_{reason}": reasons.get(reason, 0) for reason in DROP_REASONS})
    metrics["judged"] = len(verdicts)
    metrics["judge_errors"] = sum(v.label is None for v in verdicts)
    metrics["judge_parse_rate"] = round(1 - metrics["judge_errors"] / len(verdicts), 4) if verdicts else None
    metrics.update({f"verdict_{label}": sum(v.label == label for v in verdicts) for label in LABELS})
    metrics["kept_share"] = round(len(kept) / len(rows), 4) if rows else 0.0
    return metrics


def _coverage(rows: list[dict], kept: list[dict]) -> list[dict]:
    """Kept rows per field x difficulty, with zero cells for every pair the input had (DVC bar plot)."""
    def cell(row: dict) -> tuple[str, str]:
        return str(row.get("field") or "unknown"), str(row.get("difficulty") or "unknown")

    counts = Counter(cell(r) for r in kept)
    cells = sorted({cell(r) for r in rows})
    return [{"field": f, "difficulty": d, "cell": f"{f} / {d}", "kept": counts.get((f, d), 0)} for f, d in cells]


def list_shards(raw: Path, shard: tuple[int, int] | None = None) -> list[Path]:
    """Input files of the generate stage, sorted; with `shard=(i, n)` only every n-th from i."""
    from ftllm.io import InputError

    raw = Path(raw)
    if not raw.exists():
        raise InputError(f"{raw}: input not found")
    files = [raw] if raw.is_file() else sorted(p for p in raw.iterdir() if p.suffix in (".parquet", ".jsonl"))
    if not files:
        raise InputError(f"{raw}: no .parquet or .jsonl shards in the folder")
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise InputError(f"--shard {index}/{count}: index must be in [0, {count})")
        files = files[index::count]
    return files


def read_shards(files: list[Path]) -> list[dict]:
    """Rows of every file, in order; a row lacking a required column names its file and row."""
    from ftllm.io import ID_TYPES, InputError, read_records

    types = {"id": ID_TYPES, "problem": (str,), "solution": (str,), "answer": (str,)}
    rows: list[dict] = []
    for path in files:
        for number, row in enumerate(read_records(path, allow_empty=True, types=types), start=1):
            missing = [c for c in REQUIRED_COLUMNS if c not in row]
            if missing:
                raise InputError(f"{path}: row {number}: missing required field(s) {', '.join(missing)}")
            rows.append(row)
    if not rows:
        raise InputError(f"{files[0].parent}: the input shards hold no rows")
    return rows


def run_judge(config: JudgeConfig, raw: Path, evals: list[Path], out: Path, shard: tuple[int, int] | None = None,
              engine_factory: Callable | None = None) -> Curation:
    """Read generate's shards and the eval sets, curate, write `kept.parquet` and `dropped.parquet`.

    Unsharded, `out/` is written as one folder (atomically). With `shard=(i, n)` the
    outputs go to `out/shard-<i>-of-<n>/` and dedup covers only that shard's rows.
    """
    from ftllm.io import atomic_path, write_parquet

    rows = read_shards(list_shards(raw, shard))
    eval_rows = read_eval_sets([Path(p) for p in evals])
    result = curate(rows, eval_rows, config, engine_factory)
    target = Path(out) if shard is None else Path(out) / f"shard-{shard[0]:05d}-of-{shard[1]:05d}"
    with atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        write_parquet(tmp / "kept.parquet", result.kept)
        write_parquet(tmp / "dropped.parquet", result.dropped)
    return result


__all__ = ["Curation", "JudgeConfig", "curate", "run_judge", "DROP_REASONS"]


def judge_stage(config: JudgeConfig, raw: Path, evals: list[Path], out: Path, plot: Path,
                shard: tuple[int, int] | None = None) -> dict:
    """The `judge` stage: curate, write the coverage plot rows to `plot`; returns the flat metrics."""
    from ftllm.io import write_json

    result = run_judge(config, raw=raw, evals=list(evals), out=out, shard=shard)
    write_json(plot, result.coverage)
    return result.metrics
