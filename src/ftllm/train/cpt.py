"""Continued pretraining with DoRA and context extension (the `cpt` stage).

1. Context: the RoPE settings in the model config are changed *before* the weights load, so the
   rotary tables are built for the new context: ABF raises the RoPE base (`rope_theta`), YaRN sets
   `rope_type: yarn` with a factor over the original window. `max_position_embeddings` becomes
   `context_length` either way (transformers 5 keeps these in `config.rope_parameters`).
2. Corpus: a hub dataset streamed shard by shard (full scale: the arXiv subset of proof-pile-2)
   or local text/JSONL files (demo, tests), through the same streaming pipeline. Every document is
   tokenised on the fly with EOS appended, concatenated and cut into blocks of `block_size` tokens
   (packing, as in the OpT-DeUS data pipeline) until `token_budget` tokens; position ids restart
   per document so packed documents do not attend to each other (`separate_documents`).
3. DoRA adapters (peft, `use_dora`) on every linear layer are trained with the transformers
   Trainer, then merged (`merge_and_unload`) so later stages and vLLM see a plain checkpoint
   that carries the new RoPE config.

Checkpoints go to a persistent folder, so a killed run resumes on rerun; a fingerprint of
config + model + corpus keeps a run from resuming another run's checkpoints.

    train_cpt(config, model_dir, out_dir, checkpoint_dir, metrics_path, loss_log_path)
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

from ftllm.io import InputError, read_jsonl, write_json
from ftllm.train.checkpoints import checkpoint_step, hash_path, prepare_checkpoint_dir, settings_digest
from ftllm.train.launch import distributed_state, world_size
from ftllm.train.trainer import TrainerSettings, live_callbacks, loss_history, shared_trainer_args

log = logging.getLogger(__name__)

ROPE_SCALINGS = ("abf", "yarn", "none")
TEXT_SUFFIXES = (".txt", ".md")


@dataclasses.dataclass(frozen=True)
class CorpusDataset:
    """A hub dataset streamed with `datasets.load_dataset(path, name, split=..., streaming=True)`."""

    path: str  # hub id, e.g. EleutherAI/proof-pile-2
    name: str | None = None  # the dataset's config (subset), e.g. arxiv
    split: str = "train"
    text_field: str = "text"
    data_files: Any = None  # optional glob(s) inside the repo, for datasets without named configs
    revision: str | None = None  # a commit, for reproducible runs


@dataclasses.dataclass(frozen=True)
class CPTConfig(TrainerSettings):
    """The `cpt` params section (schedule, batch, logging and launch keys: `TrainerSettings`)."""

    # corpus: a hub dataset streamed when `dataset` is set, else the local files in `corpus` (same pipeline)
    dataset: CorpusDataset | None = None
    corpus: list[str] = ()  # local .txt/.md/.jsonl files or folders of them
    text_column: str = "text"  # the field read from local JSONL files
    token_budget: int | None = None  # stop after this many tokens (required with `dataset` unless max_steps > 0)
    separate_documents: bool = True  # position ids restart per document: packed documents do not attend to each other
    # context extension
    context_length: int = 16384  # the new max_position_embeddings
    rope_scaling: str = "abf"  # abf (raise rope_theta) | yarn | none (leave RoPE as it is)
    rope_theta: float | None = None  # abf: the new RoPE base (required)
    yarn_factor: float | None = None  # yarn: null = context_length / original max_position_embeddings
    block_size: int | None = None  # packed training sequence length; null = context_length
    # DoRA
    use_dora: bool = True  # false gives plain LoRA (faster, for comparison)
    lora_r: int = 64
    lora_alpha: float = 64.0
    lora_dropout: float = 0.0  # 0 lets DoRA reuse the base output (faster)
    use_rslora: bool = True  # scale alpha/sqrt(r): high ranks keep learning
    target_modules: Any = "all-linear"  # peft: every linear layer except the output head
    # batch and memory
    gradient_accumulation_steps: int = 8
    # auto: recompute activations only when ftllm.train.trainer.needs_checkpointing's estimate says a
    # micro-batch does not fit the GPU without it | true | false
    gradient_checkpointing: Any = "auto"
    use_liger_kernel: bool = True  # fused RMSNorm/SwiGLU/cross-entropy; only applied when liger_kernel is importable
    dtype: str = "bfloat16"  # dtype the base weights load in
    # flex_attention keeps packed documents apart with a block-sparse mask (no backward on CPU: use sdpa there)
    attn_implementation: str | None = "flex_attention"

    def __post_init__(self) -> None:
        if self.gradient_checkpointing not in (True, False, "auto"):
            raise ValueError(f"gradient_checkpointing must be true, false or auto, got {self.gradient_checkpointing!r}")
        if self.rope_scaling not in ROPE_SCALINGS:
            raise ValueError(f"rope_scaling must be one of {', '.join(ROPE_SCALINGS)}, got {self.rope_scaling!r}")
        if self.rope_scaling == "abf" and (self.rope_theta is None or self.rope_theta <= 0):
            raise ValueError("rope_theta must be set (> 0) when rope_scaling is abf")
        if self.yarn_factor is not None and self.yarn_factor <= 1:
            raise ValueError(f"yarn_factor must be > 1, got {self.yarn_factor}")
        super().__post_init__()
        for key in ("context_length", "lora_r", "gradient_accumulation_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.block_size is not None and not 1 < self.block_size <= self.context_length:
            raise ValueError(f"block_size must be in (1, context_length={self.context_length}], got {self.block_size}")
        if self.token_budget is not None and self.token_budget < self.sequence_length:
            raise ValueError(
                f"token_budget must be >= one block ({self.sequence_length} tokens), got {self.token_budget}")
        if self.dataset is not None and self.token_budget is None and self.max_steps <= 0:
            raise ValueError("token_budget (or max_steps > 0) is required when streaming a hub dataset")

    @property
    def sequence_length(self) -> int:
        return self.block_size or self.context_length


# ---------------------------------------------------------------------------
# Context extension


def extend_context(model_config, config: CPTConfig) -> dict:
    """Rewrite the RoPE settings of a transformers config in place; returns what was set."""
    rope = dict(getattr(model_config, "rope_parameters", None) or {})
    original = model_config.max_position_embeddings
    rope.setdefault("rope_theta", getattr(model_config, "rope_theta", 10000.0))
    rope.setdefault("rope_type", "default")
    if config.rope_scaling == "none":
        return {"rope_type": rope["rope_type"], "rope_theta": rope["rope_theta"], "max_position_embeddings": original}
    if config.context_length < original:
        # shrinking the window would only lose ability the model already has
        log.warning("context_length %d is below the model's %d: keeping %d", config.context_length, original, original)
    target = max(config.context_length, original)
    if config.rope_scaling == "abf":
        rope["rope_theta"] = float(config.rope_theta)
    else:
        factor = config.yarn_factor or target / original
        if factor <= 1:
            raise ValueError(f"yarn needs context_length ({config.context_length}) above the model's {original}")
        rope.update(rope_type="yarn", factor=float(factor), original_max_position_embeddings=original)
    model_config.rope_parameters = rope
    model_config.max_position_embeddings = target
    log.info("context: %s, rope_theta %s, max_position_embeddings %d -> %d",
             config.rope_scaling, rope["rope_theta"], original, target)
    return {"rope_type": rope["rope_type"], "rope_theta": rope["rope_theta"], "max_position_embeddings": target}


def load_tokenizer(model_dir: str | Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except OSError as err:
        raise InputError(f"{model_dir}: cannot load a tokenizer there ({str(err).splitlines()[0]})") from None


def load_extended_model(model_dir: str | Path, config: CPTConfig):
    """(model, tokenizer, context summary) with the RoPE change applied before the weights load."""
    from transformers import AutoConfig

    from ftllm.models import load_model

    try:
        model_config = AutoConfig.from_pretrained(str(model_dir))
    except OSError as err:
        raise InputError(f"{model_dir}: cannot load a model there ({str(err).splitlines()[0]})") from None
    context = extend_context(model_config, config)
    kwargs = {"attn_implementation": config.attn_implementation} if config.attn_implementation else {}
    model, tokenizer = load_model(model_dir, dtype=config.dtype, config=model_config, **kwargs)
    return model, tokenizer, context


# ---------------------------------------------------------------------------
# Corpus -> a stream of packed blocks


def local_files(paths) -> list[Path]:
    """Expand files and folders into the sorted list of corpus files."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES + (".jsonl",))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: corpus file not found")
    if not files:
        raise InputError(f"{', '.join(map(str, paths)) or 'cpt.corpus'}: no corpus files (.txt, .md, .jsonl)")
    return files


def _local_rows(files: list[str], text_field: str):
    """One {"text"} row per text file or per JSONL row, read one file at a time (file:line errors)."""
    for name in files:
        path = Path(name)
        if path.suffix == ".jsonl":
            for row in read_jsonl(path, required=[text_field]):
                yield {"text": str(row[text_field])}
        else:
            yield {"text": path.read_text(encoding="utf-8")}


def stream_documents(config: CPTConfig, corpus: list[Path] | None = None):
    """The corpus as a streaming `datasets.IterableDataset` with one `text` column.

    A hub dataset (`cpt.dataset`) streams shard by shard, so a token budget far below the corpus size
    downloads only what it trains on; local files (`cpt.corpus`, or the stage's --corpus) go through
    the same streaming pipeline from a generator.
    """
    from datasets import IterableDataset, load_dataset

    spec = config.dataset
    if corpus or spec is None:
        files = [str(f) for f in local_files(corpus or config.corpus)]
        return IterableDataset.from_generator(_local_rows,
                                              gen_kwargs={"files": files, "text_field": config.text_column})
    try:
        data = load_dataset(spec.path, spec.name, split=spec.split, data_files=spec.data_files,
                            revision=spec.revision, streaming=True)  # fmt: skip
    except (FileNotFoundError, ValueError) as err:
        raise InputError(f"cpt.dataset {spec.path} ({spec.name}, {spec.split}): {str(err).splitlines()[0]}") from None
    if data.column_names is not None and spec.text_field not in data.column_names:
        raise InputError(f"{spec.path}: no column {spec.text_field!r} (cpt.dataset.text_field); "
                         f"it has {', '.join(data.column_names)}")
    data = data.select_columns([spec.text_field])
    return data if spec.text_field == "text" else data.rename_column(spec.text_field, "text")


def corpus_source(config: CPTConfig, corpus: list[Path] | None = None) -> str:
    """What the corpus is, for messages: the hub dataset or the local paths."""
    if corpus or config.dataset is None:
        return ", ".join(map(str, corpus or config.corpus))
    return f"{config.dataset.path}" + (f" ({config.dataset.name})" if config.dataset.name else "")


def pack_stream(documents, tokenizer, block_size: int, token_budget: int | None = None,
                separate_documents: bool = True, source: str = "the corpus", batch_documents: int = 256):
    """Yield {input_ids, labels, position_ids} blocks of `block_size` tokens from a document stream.

    Each document gets EOS appended; documents are concatenated and cut into full blocks (a document
    may continue in the next block). With `separate_documents`, position ids restart at every
    document, which transformers (with `use_cache=False`) turns into a block-diagonal causal mask:
    padding-free packing without attention across documents. Stops after `token_budget` tokens.
    Raises InputError when the whole corpus is shorter than one block.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError("the tokenizer has no EOS token to separate documents")
    ids: list[int] = []
    starts: list[bool] = []  # True where a document begins
    seen = blocks = 0
    for batch in documents.iter(batch_size=batch_documents):
        texts = [t for t in batch["text"] if t and t.strip()]
        if not texts:
            continue
        for sequence in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            seen += len(sequence) + 1
            ids += sequence + [eos]
            starts += [True] + [False] * len(sequence)
            while len(ids) >= block_size:
                block, ids = ids[:block_size], ids[block_size:]
                flags, starts = starts[:block_size], starts[block_size:]
                positions = block_positions(flags, separate_documents)
                yield {"input_ids": block, "labels": list(block), "position_ids": positions}
                blocks += 1
                if token_budget is not None and blocks * block_size >= token_budget:
                    return
    if blocks == 0:
        raise InputError(f"{source}: the corpus has {seen} tokens, fewer than one block of {block_size} tokens "
                         "(cpt.block_size, else cpt.context_length)")


def block_positions(starts: list[bool], separate_documents: bool) -> list[int]:
    """Position ids of one block: restart at each document start (and at the block start, so a long
    document split across blocks never runs past the trained window), or 0..n-1 without separation."""
    if not separate_documents:
        return list(range(len(starts)))
    positions, position = [], 0
    for i, start in enumerate(starts):
        position = 0 if start or i == 0 else position + 1
        positions.append(position)
    return positions


class PackedBlocks:
    """A re-iterable stream of packed blocks for the Trainer (each pass streams the corpus again)."""

    def __init__(self, documents, tokenizer, block_size: int, token_budget: int | None, separate_documents: bool,
                 source: str = "the corpus"):
        self.args = (documents, tokenizer, block_size, token_budget, separate_documents, source)

    def __iter__(self):
        return pack_stream(*self.args)


def as_torch_iterable(blocks: PackedBlocks):
    import torch

    class Blocks(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(blocks)

    return Blocks()


def count_blocks(blocks: PackedBlocks) -> int:
    """Blocks in one pass (local corpora without a token budget: sets the number of steps)."""
    return sum(1 for _ in blocks)


# ---------------------------------------------------------------------------
# Training


def add_adapters(model, config: CPTConfig):
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    set_seed(config.seed)  # the adapters' random init must not depend on what ran before in this process

    target = list(config.target_modules) if isinstance(config.target_modules, (list, tuple)) else config.target_modules
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      use_dora=config.use_dora, use_rslora=config.use_rslora, target_modules=target,
                      task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def resolve_checkpointing(config: CPTConfig, model_config) -> bool:
    """gradient_checkpointing as set, or for `auto` the memory estimate (frozen bf16 base, DDP: one copy per GPU)."""
    if config.gradient_checkpointing != "auto":
        return bool(config.gradient_checkpointing)
    from ftllm.train.trainer import device_memory_bytes, needs_checkpointing

    memory = device_memory_bytes()
    if memory is None:  # CPU: nothing to size against
        return False
    tokens = config.per_device_batch_size * config.sequence_length
    return needs_checkpointing(model_config, tokens, 1, memory, trains_all=False)


def trainer_args(config: CPTConfig, checkpoint_dir: str | Path, max_steps: int, checkpointing: bool = False):
    import importlib.util

    from transformers import TrainingArguments

    shared = shared_trainer_args(config, checkpoint_dir, config.gradient_accumulation_steps)
    shared["max_steps"] = max_steps  # a streamed corpus has no length: the trainer needs the step count
    shared["gradient_checkpointing"] = checkpointing
    return TrainingArguments(
        **shared,
        use_liger_kernel=config.use_liger_kernel and importlib.util.find_spec("liger_kernel") is not None,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        remove_unused_columns=False,
    )


def run_fingerprint(config: CPTConfig, model_dir: str | Path, corpus: list[Path] | None) -> str:
    """Hash of what determines the run (launch-only keys left out), so stale checkpoints are not resumed."""
    digest = settings_digest(config)
    hash_path(digest, Path(model_dir))  # same-shape but different weights must not resume (as sft and rl)
    if corpus or config.dataset is None:
        for file in local_files(corpus or config.corpus):
            digest.update(file.read_bytes())
    return digest.hexdigest()


def train_cpt(
    config: CPTConfig,
    model_dir: str | Path,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    metrics_path: str | Path | None = None,
    loss_log_path: str | Path | None = None,
    corpus: list[Path] | None = None,
    callbacks: tuple = (),
    live_dir: str | Path | None = None,
) -> dict:
    """Extend the context, train DoRA adapters on the packed corpus, merge and save; return metrics."""
    from transformers import Trainer, default_data_collator

    from ftllm.models import save_checkpoint

    state = distributed_state()
    with state.main_process_first():  # rank 0 clears a stale folder before the others look in it
        resume_from = prepare_checkpoint_dir(checkpoint_dir, run_fingerprint(config, model_dir, corpus),
                                             is_main=state.is_main_process)
    documents = stream_documents(config, corpus)
    blocks = PackedBlocks(documents, load_tokenizer(model_dir), config.sequence_length, config.token_budget,
                          config.separate_documents, corpus_source(config, corpus))
    next(iter(blocks))  # a malformed corpus, or one shorter than one block, fails here, before the model loads
    model, tokenizer, context = load_extended_model(model_dir, config)
    tokens_per_step = (config.per_device_batch_size * config.gradient_accumulation_steps * world_size()
                       * config.sequence_length)  # fmt: skip
    max_steps = config.max_steps
    if max_steps <= 0:  # a stream has no length: the budget (or one counted pass per epoch) sets the steps
        passes = math.ceil(config.num_train_epochs * count_blocks(blocks)) if not config.token_budget else 0
        budget = config.token_budget or passes * config.sequence_length
        max_steps = max(1, budget // tokens_per_step)
    log.info("cpt: %d steps of %d tokens from %s", max_steps, tokens_per_step, corpus_source(config, corpus))
    # the KV cache is useless in training, and with it on packed documents would attend to each other
    model.config.use_cache = False
    model = add_adapters(model, config)
    trainable, total = model.get_nb_trainable_parameters()
    checkpointing = resolve_checkpointing(config, model.config)
    args = trainer_args(config, checkpoint_dir, max_steps, checkpointing)
    trainer = Trainer(model=model, args=args, train_dataset=as_torch_iterable(blocks),
                      data_collator=default_data_collator, callbacks=[*callbacks, *live_callbacks(config, live_dir)])
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    runtime_s = time.perf_counter() - started

    history = loss_history(trainer.state.log_history)
    steps = trainer.state.global_step
    metrics = {
        "train_loss": result.training_loss,
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "steps": steps,
        "tokens_seen": steps * args.per_device_train_batch_size * args.gradient_accumulation_steps
        * world_size() * config.sequence_length,
        "token_budget": config.token_budget,
        "block_size": config.sequence_length,
        **context,
        "trainable_params": trainable,
        "total_params": total,
        "runtime_s": round(runtime_s, 2),
        "resumed_from_step": checkpoint_step(resume_from),
        "processes": world_size(),
        "gradient_checkpointing": checkpointing,
        "attn_implementation": config.attn_implementation,
    }
    if trainer.accelerator.is_main_process:
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        merged.config.use_cache = True
        save_checkpoint(merged, tokenizer, out_dir)
        if metrics_path:
            write_json(metrics_path, metrics)
        if loss_log_path:
            write_json(loss_log_path, history)
    trainer.accelerator.wait_for_everyone()
    return metrics
