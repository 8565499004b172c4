"""Run the teacher over the grid, shard by shard, resumably.

One engine call per shard (or one per distinct group size when a shard cuts a cell
in two): every prompt of the shard goes to the backend at once, so vLLM batches them
and Python parsing stays out of the sampling loop. Within a cell the prompt is the
same, so its samples are one prompt with `n` samples: vLLM then gives each sample its
own seed (seed + index) and shares the prompt's KV cache.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from ftllm.config import ConfigError, to_dict
from ftllm.engine.base import Completion, render_chat
from ftllm.generate.grid import Item, build_grid, build_items, group_by_cell, owned_shards, shard_seed, split_shards
from ftllm.generate.parse import ParseFailure, parse_teacher_text
from ftllm.generate.prompts import PromptSet, load_prompt_set, render_conversation
from ftllm.io import InputError, write_parquet

if TYPE_CHECKING:
    from ftllm.engine import Engine
    from ftllm.generate import GenerateConfig

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
REJECTS_DIR = "rejects"


def shard_path(out_dir: Path, shard: int) -> Path:
    return out_dir / f"shard-{shard:05d}.parquet"


def rejects_path(out_dir: Path, shard: int) -> Path:
    return out_dir / REJECTS_DIR / f"shard-{shard:05d}.parquet"


def plan_items(config: GenerateConfig) -> list[list[Item]]:
    cells = build_grid(config.fields, config.difficulties, config.tool_use)
    return split_shards(build_items(cells, config.samples_per_cell, config.seed), config.shard_size)


def plan_fingerprint(config: GenerateConfig, prompts: PromptSet) -> str:
    """Everything that changes what a shard holds; deployment knobs (backend, concurrency) are left out."""
    content = dict(
        fields=config.fields,
        difficulties=list(config.difficulties),
        tool_use=list(config.tool_use),
        samples_per_cell=config.samples_per_cell,
        shard_size=config.shard_size,
        seed=config.seed,
        language=config.language,
        reasoning_effort=config.reasoning_effort,
        prompts=dataclasses.asdict(prompts),
        sampling=to_dict(config.sampling),
        teacher=config.teacher.model,
        max_answer_chars=config.max_answer_chars,
        response_prefix=config.response_prefix,
    )
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False, default=list).encode()).hexdigest()


def _claim_folder(out_dir: Path, fingerprint: str, total: int) -> None:
    """Refuse to mix shards of two different plans in one folder; record the plan otherwise."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = out_dir / PLAN_FILE
    if plan.exists():
        recorded = json.loads(plan.read_text(encoding="utf-8"))
        if recorded.get("fingerprint") != fingerprint:
            raise InputError(
                f"{out_dir}: holds shards of a different generate plan (params changed); remove it or use another --out"
            )
        return
    # a per-process temporary name: several --shard workers may claim the folder at once
    tmp = out_dir / f"{PLAN_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"fingerprint": fingerprint, "shards": total}) + "\n", encoding="utf-8")
    os.replace(tmp, plan)


def generate_shards(
    config: GenerateConfig,
    out_dir: str | Path,
    shard: tuple[int, int] = (0, 1),
    engine: Engine | None = None,
) -> dict:
    """Generate every missing shard owned by worker `shard` = (i, n); return flat metrics over them.

    `engine` lets a caller (a benchmark) reuse a loaded engine; otherwise one is built
    from `config.teacher` only if some shard still needs sampling, and closed after.
    """
    out_dir = Path(out_dir)
    prompts = load_prompt_set(config.language, config.template_file, config.system_template, config.user_template)
    shards = plan_items(config)
    _claim_folder(out_dir, plan_fingerprint(config, prompts), len(shards))
    mine = owned_shards(len(shards), *shard)
    pending = [k for k in mine if not shard_path(out_dir, k).exists()]
    log.info("generate: %d shards, %d owned, %d to sample", len(shards), len(mine), len(pending))
    if pending:
        own_engine = engine is None
        if own_engine:
            from ftllm.engine import make_engine

            engine = make_engine(config.teacher)
        try:
            _check_harmony(engine, config)
            for k in tqdm(pending, desc="generate shards", unit="shard"):
                run_shard(engine, config, prompts, k, shards[k], out_dir)
        finally:
            if own_engine:
                engine.close()
    return summarize(out_dir, mine, shards, config)


def _template_override(engine: Engine) -> str | None:
    if engine.spec.chat_template:
        return Path(engine.spec.chat_template).read_text(encoding="utf-8")
    return None


def _check_harmony(engine: Engine, config: GenerateConfig) -> None:
    template = _template_override(engine) or getattr(engine.tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default", "")
    harmony = any(token in (template or "") for token in ("<|channel|>", "<|message|>"))
    if harmony and config.sampling.skip_special_tokens:
        raise ConfigError(
            "generate.sampling.skip_special_tokens: must be false for a harmony teacher (channels are special tokens)"
        )


def sample(engine: Engine, conversations: list, sampling, config: GenerateConfig) -> list[list[Completion]]:
    """One engine call for all `conversations`; with a response prefix the assistant turn starts with it."""
    kwargs = {"reasoning_effort": config.reasoning_effort}
    if not config.response_prefix:
        return engine.chat(conversations, sampling, **kwargs)
    template = _template_override(engine)
    prefix = list(engine.tokenizer(config.response_prefix, add_special_tokens=False)["input_ids"])
    prompts = [render_chat(engine.tokenizer, c, template, **kwargs) + prefix for c in conversations]
    outputs = engine.generate_ids(prompts, sampling)
    # the raw text is what the teacher's turn holds, prefix included, so it parses as a whole
    return [[dataclasses.replace(c, text=config.response_prefix + c.text) for c in out] for out in outputs]


def run_shard(
    engine: Engine, config: GenerateConfig, prompts: PromptSet, index: int, items: list[Item], out_dir: Path,
) -> None:
    """Sample, parse and write one shard: rejects first, then the shard file that marks it complete."""
    groups = group_by_cell(items)
    by_size: dict[int, list[list[Item]]] = {}
    for group in groups:
        by_size.setdefault(len(group), []).append(group)
    seed = shard_seed(config.seed, index)
    kept, rejected = [], []
    for size, same_size in by_size.items():
        conversations = [render_conversation(prompts, g[0].cell, config.language) for g in same_size]
        sampling = dataclasses.replace(config.sampling, n=size, seed=seed)
        outputs = sample(engine, conversations, sampling, config)
        for group, conversation, completions in zip(same_size, conversations, outputs):
            for item, completion in zip(group, completions):
                row = parse_row(item, index, completion, conversation, config, prompts)
                (rejected if "reason" in row else kept).append(row)
    order = {item.id: i for i, item in enumerate(items)}
    kept.sort(key=lambda r: order[r["id"]])
    rejected.sort(key=lambda r: order[r["id"]])
    write_parquet(rejects_path(out_dir, index), rejected)
    write_parquet(shard_path(out_dir, index), kept)


def parse_row(
    item: Item, shard: int, completion: Completion, conversation: list, config: GenerateConfig, prompts: PromptSet,
) -> dict:
    """A kept row, or a reject row (it has a `reason`) that keeps the raw text."""
    row = _base_row(item, shard, completion)
    try:
        parsed = parse_teacher_text(
            completion.text,
            completion.finish_reason,
            tool_use=item.cell.tool_use,
            example_problem=prompts.example["problem"],
            max_answer_chars=config.max_answer_chars,
        )
    except ParseFailure as failure:
        return {**row, "reason": failure.reason}
    return {
        **row,
        "teacher": config.teacher.model,
        "language": config.language,
        "reasoning_effort": config.reasoning_effort,
        "prompt": conversation[-1]["content"],
        **dataclasses.asdict(parsed),
    }


def _base_row(item: Item, shard: int, completion: Completion) -> dict:
    cell = item.cell
    return {
        "id": item.id,
        "cell": cell.key,
        "category": cell.category,
        "unit": cell.unit,
        "difficulty": cell.difficulty,
        "tool_use": cell.tool_use,
        "sample": item.sample,
        "shard": shard,
        "raw_text": completion.text,
        "finish_reason": completion.finish_reason,
        "num_tokens": completion.num_tokens,
        "cumulative_logprob": completion.cumulative_logprob,
    }


def _read_columns(path: Path, columns: list[str]) -> list[dict]:
    """Only the columns metrics need: shards hold long texts that need not be loaded."""
    import pyarrow.parquet as pq

    if not path.exists():
        return []
    names = pq.read_schema(path).names
    if not names:  # an empty shard (all samples rejected) has no columns
        return []
    return pq.read_table(path, columns=[c for c in columns if c in names]).to_pylist()


def summarize(out_dir: Path, mine: list[int], shards: list[list[Item]], config: GenerateConfig) -> dict:
    """Flat metrics over the owned shards present in `out_dir`: totals, reject reasons, counts per cell."""
    done = [k for k in mine if shard_path(out_dir, k).exists()]
    kept = [r for k in done for r in _read_columns(shard_path(out_dir, k), ["cell", "num_tokens", "uses_python"])]
    rejected = [r for k in done for r in _read_columns(rejects_path(out_dir, k), ["cell", "num_tokens", "reason"])]
    prompts = len(kept) + len(rejected)
    metrics: dict = {
        "shards_total": len(shards),
        "shards_owned": len(mine),
        "shards_done": len(done),
        "samples": prompts,
        "kept": len(kept),
        "rejected": len(rejected),
        "parse_yield": round(len(kept) / prompts, 4) if prompts else 0.0,
        "uses_python": sum(bool(r.get("uses_python")) for r in kept),
        "tokens_generated": sum(int(r.get("num_tokens") or 0) for r in kept + rejected),
    }
    for reason, count in sorted(Counter(r["reason"] for r in rejected).items()):
        metrics[f"reject.{reason}"] = count
    kept_cells = Counter(r["cell"] for r in kept)
    rejected_cells = Counter(r["cell"] for r in rejected)
    cells = dict.fromkeys(item.cell.key for k in done for item in shards[k])
    for cell in cells:
        metrics[f"cell.{cell}.kept"] = kept_cells.get(cell, 0)
        metrics[f"cell.{cell}.rejected"] = rejected_cells.get(cell, 0)
    return metrics
