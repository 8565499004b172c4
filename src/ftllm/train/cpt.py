"""Continued pretraining with DoRA and context extension (the `cpt` stage).

1. Context: the RoPE settings in the model config are changed *before* the weights load, so the
   rotary tables are built for the new context: ABF raises the RoPE base (`rope_theta`), YaRN sets
   `rope_type: yarn` with a factor over the original window. `max_position_embeddings` becomes
   `context_length` either way (transformers 5 keeps these in `config.rope_parameters`).
2. Corpus: a hub dataset (full scale, e.g. an arXiv corpus) or local text/JSONL files (demo,
   tests). Every document is tokenised with EOS appended, concatenated and cut into blocks of
   `block_size` tokens (packing, as in the OpT-DeUS data pipeline).
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
import time
from pathlib import Path
from typing import Any

from ftllm.io import InputError, read_jsonl, write_json
from ftllm.train.checkpoints import checkpoint_step, hash_path, prepare_checkpoint_dir, settings_digest
from ftllm.train.launch import world_size
from ftllm.train.trainer import TrainerSettings, live_callbacks, loss_history, shared_trainer_args

log = logging.getLogger(__name__)

ROPE_SCALINGS = ("abf", "yarn", "none")
TEXT_SUFFIXES = (".txt", ".md")


@dataclasses.dataclass(frozen=True)
class CPTConfig(TrainerSettings):
    """The `cpt` params section (schedule, batch, logging and launch keys: `TrainerSettings`)."""

    # corpus: a hub dataset when `dataset` is set, else the local files in `corpus`
    dataset: str | None = None  # hub id (loaded with datasets.load_dataset)
    dataset_config: str | None = None
    dataset_split: str = "train"
    text_column: str = "text"  # also the field read from local JSONL files
    max_documents: int | None = None  # stream the hub dataset and keep the first N documents
    corpus: list[str] = ()  # local .txt/.md/.jsonl files or folders of them
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
    dtype: str = "bfloat16"  # dtype the base weights load in
    attn_implementation: str | None = "sdpa"
    dataset_num_proc: int | None = None

    def __post_init__(self) -> None:
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
        if self.max_documents is not None and self.max_documents < 1:
            raise ValueError(f"max_documents must be >= 1, got {self.max_documents}")

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
# Corpus -> packed blocks


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


def read_local_documents(paths, text_column: str = "text") -> list[str]:
    """A text file is one document; a JSONL file holds one document per row in `text_column`."""
    documents: list[str] = []
    for path in local_files(paths):
        if path.suffix == ".jsonl":
            documents += [str(row[text_column]) for row in read_jsonl(path, required=[text_column])]
        else:
            documents.append(path.read_text(encoding="utf-8"))
    documents = [d for d in documents if d.strip()]
    if not documents:
        raise InputError(f"{', '.join(map(str, paths))}: the corpus holds no text")
    return documents


def load_documents(config: CPTConfig, corpus: list[Path] | None = None):
    """The corpus as a `datasets.Dataset` with one `text` column."""
    from datasets import Dataset, load_dataset

    if corpus or not config.dataset:
        return Dataset.from_dict({"text": read_local_documents(corpus or config.corpus, config.text_column)})
    streaming = config.max_documents is not None  # avoid downloading a whole corpus for a budgeted run
    data = load_dataset(config.dataset, config.dataset_config, split=config.dataset_split, streaming=streaming)
    if config.text_column not in (data.column_names or [config.text_column]):
        raise InputError(f"{config.dataset}: no column {config.text_column!r} (cpt.text_column)")
    if streaming:
        return Dataset.from_dict({"text": [row[config.text_column] for row in data.take(config.max_documents)]})
    data = data.select_columns([config.text_column])
    return data if config.text_column == "text" else data.rename_column(config.text_column, "text")


def pack_token_ids(sequences: list[list[int]], block_size: int) -> list[list[int]]:
    """Concatenate token sequences and cut them into full blocks; the short tail is dropped."""
    flat = [token for sequence in sequences for token in sequence]
    return [flat[i: i + block_size] for i in range(0, len(flat) - block_size + 1, block_size)]


def pack_corpus(documents, tokenizer, block_size: int, num_proc: int | None = None):
    """Tokenise with EOS appended and pack into `input_ids`/`labels` blocks of `block_size` tokens."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError("the tokenizer has no EOS token to separate documents")

    def tokenize(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [seq + [eos] for seq in ids]}

    def pack(batch):
        blocks = pack_token_ids(batch["input_ids"], block_size)
        return {"input_ids": blocks, "labels": [list(b) for b in blocks]}

    tokens = documents.map(tokenize, batched=True, remove_columns=documents.column_names, num_proc=num_proc,
                           desc="tokenise")
    total = sum(len(ids) for ids in tokens["input_ids"])
    # batches of 1000 documents: at most one partial block is lost per batch
    blocks = tokens.map(pack, batched=True, batch_size=1000, num_proc=num_proc, desc="pack")
    if len(blocks) == 0:
        raise InputError(f"the corpus has {total} tokens, fewer than one block of {block_size} (cpt.block_size)")
    return blocks, total


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


def trainer_args(config: CPTConfig, checkpoint_dir: str | Path):
    from transformers import TrainingArguments

    return TrainingArguments(
        **shared_trainer_args(config, checkpoint_dir, config.gradient_accumulation_steps),
        gradient_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        remove_unused_columns=False,
    )


def run_fingerprint(config: CPTConfig, model_dir: str | Path, corpus: list[Path] | None) -> str:
    """Hash of what determines the run (launch-only keys left out), so stale checkpoints are not resumed."""
    digest = settings_digest(config)
    hash_path(digest, Path(model_dir))  # same-shape but different weights must not resume (as sft and rl)
    if corpus or not config.dataset:
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
    from accelerate import PartialState
    from transformers import Trainer, default_data_collator

    from ftllm.models import save_checkpoint

    state = PartialState()
    with state.main_process_first():  # rank 0 clears a stale folder before the others look in it
        resume_from = prepare_checkpoint_dir(checkpoint_dir, run_fingerprint(config, model_dir, corpus))
    with state.main_process_first():  # rank 0 downloads first; the others reuse its cache
        documents = load_documents(config, corpus)  # before the model, so a bad corpus fails fast
    model, tokenizer, context = load_extended_model(model_dir, config)
    blocks, corpus_tokens = pack_corpus(documents, tokenizer, config.sequence_length, config.dataset_num_proc)
    log.info("corpus: %d tokens -> %d blocks of %d", corpus_tokens, len(blocks), config.sequence_length)
    model.config.use_cache = False  # the KV cache is useless in training and conflicts with checkpointing
    model = add_adapters(model, config)
    trainable, total = model.get_nb_trainable_parameters()
    args = trainer_args(config, checkpoint_dir)
    trainer = Trainer(model=model, args=args, train_dataset=blocks, data_collator=default_data_collator,
                      callbacks=[*callbacks, *live_callbacks(config, live_dir)])
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
        "corpus_tokens": corpus_tokens,
        "blocks": len(blocks),
        "block_size": config.sequence_length,
        **context,
        "trainable_params": trainable,
        "total_params": total,
        "runtime_s": round(runtime_s, 2),
        "resumed_from_step": checkpoint_step(resume_from),
        "processes": world_size(),
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
