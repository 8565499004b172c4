"""Supervised fine-tuning on judged teacher solutions (the `sft` stage), Open-R1 distill recipe.

Each judged row becomes one prompt-completion conversation:

    prompt     = [system (optional), user]: the shared prompt contract (`ftllm.prompting`, params `prompt`)
    completion = [assistant: worked solution ending in \\boxed{answer},
                  teacher reasoning in `thinking` (field) / inside the content (inline) / dropped]

TRL's `SFTTrainer` renders both with the chat template and computes the loss on the
completion tokens only. Harmony templates (gpt-oss, llm-jp-4) put `thinking` in the
analysis channel; the tiny test model's ChatML template puts it in <think> tags.

The fast path is the default: rows are packed best-fit into `max_length`-token packs with no
padding; position ids restart per row, and with the KV cache off transformers turns them into a
block-diagonal mask, so each row trains exactly as it would alone (flex attention computes only
those blocks). Liger's fused kernels apply when installed; gradient checkpointing is on only when
the memory estimate in `ftllm.train.trainer` asks for it (`gradient_checkpointing: auto`). The
whole model trains unless `train_layers` restricts it to the up-scale's new layers.

The global batch is the same on any number of GPUs: gradient accumulation is derived from it.
Checkpoints go to a persistent folder so a killed run resumes on rerun; a fingerprint of
config + data + base model guards against resuming a run that was made from other inputs.

    train_sft(config, model_dir, data, out_dir, checkpoint_dir, metrics_path, loss_log_path)
    trainer, facts = build_trainer(config, model_dir, data, checkpoint_dir)   # the same trainer, not run
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

from ftllm.io import InputError, read_records, write_json
from ftllm.prompting import PromptSpec, build_conversation, fill_template
from ftllm.train.checkpoints import checkpoint_step, prepare_checkpoint_dir, run_fingerprint
from ftllm.train.launch import world_size
from ftllm.train.trainer import TrainerSettings, live_callbacks, loss_history, shared_trainer_args

log = logging.getLogger(__name__)

REASONING_MODES = ("field", "inline", "drop")


@dataclasses.dataclass(frozen=True)
class SFTConfig(TrainerSettings):
    """The `sft` params section (schedule, batch, logging and launch keys: `TrainerSettings`)."""

    # data -> conversations. The prompt is the top-level `prompt` section (sft, rl and predict share it).
    prompt: PromptSpec = dataclasses.field(default_factory=PromptSpec)
    reasoning: str = "field"  # field: `thinking` key | inline: inside content via inline_template | drop
    inline_template: str = "<think>\n{reasoning}\n</think>\n\n{content}"
    max_rows: int | None = None  # keep the first N rows (demo / smoke runs)
    # model and template
    dtype: str = "bfloat16"
    # flex_attention: block-sparse document masks for packed rows (benchmarks/sft_mfu.py: the fastest on H100/H200);
    # sdpa and eager also keep packed documents apart (from position_ids), only slower
    attn_implementation: str | None = "flex_attention"
    chat_template: str | None = None  # jinja file replacing the tokenizer's template
    eos_token: str | None = None  # the template's end-of-turn token, e.g. <|return|> (harmony), <|im_end|> (ChatML)
    # all: every weight (Open-R1, the default) | new: only the upscale's inserted layers (OpT-DeUS; a third of
    # the optimizer memory and the original layers stay as they were, but less capacity to learn the task) |
    # auto: as upscale.json's freeze_original says
    train_layers: str = "all"
    min_lr_rate: float = 0.1  # lr_scheduler_type cosine_with_min_lr: the floor, as a share of learning_rate
    # batch and memory
    # With packing (the default) a "sequence" below is one pack of up to max_length tokens holding several
    # rows; without it, one row padded to the longest in its micro-batch.
    max_length: int = 16384
    global_batch_size: int = 128  # sequences per optimizer step, whatever the GPU count
    # padding-free best-fit-decreasing packing: rows share a pack, position ids restart per row so no row
    # attends to another (transformers needs use_cache off for that, which TRL's compute_loss sets), no
    # padding is computed. false = Open-R1's unpacked rows (same loss per row, ~5x slower on an H100)
    packing: bool = True
    packing_strategy: str = "bfd"  # bfd (rows longer than max_length truncated) | bfd_split (split instead)
    # auto: recompute activations only when the estimate of ftllm.train.trainer.needs_checkpointing says a
    # micro-batch would not fit in GPU memory without it (it costs ~1/3 more compute); true | false force it
    gradient_checkpointing: Any = "auto"
    use_liger_kernel: bool = True  # only applied when liger_kernel is importable
    # checkpoints and logs
    keep_checkpoints: bool = False  # after the final save, delete checkpoint-* (optimizer states are huge)
    dataset_num_proc: int | None = None

    def __post_init__(self) -> None:
        if self.gradient_checkpointing not in (True, False, "auto"):
            raise ValueError(f"gradient_checkpointing must be true, false or auto, got {self.gradient_checkpointing!r}")
        if self.packing_strategy not in ("bfd", "bfd_split"):
            raise ValueError(f"packing_strategy must be bfd or bfd_split, got {self.packing_strategy!r}")
        if self.reasoning not in REASONING_MODES:
            raise ValueError(f"reasoning must be one of {', '.join(REASONING_MODES)}, got {self.reasoning!r}")
        if self.train_layers not in ("all", "new", "auto"):
            raise ValueError(f"train_layers must be all, new or auto, got {self.train_layers!r}")
        super().__post_init__()
        for key in ("global_batch_size", "max_length"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {self.max_rows}")


# ---------------------------------------------------------------------------
# Rows -> prompt-completion conversations


def final_content(row: dict) -> str:
    """The worked solution, made to end in \\boxed{answer} so the model learns the graded format."""
    solution = str(row["solution"]).rstrip()
    if "\\boxed{" in solution:
        return solution
    return f"{solution}\n\n\\boxed{{{row['answer']}}}"


def build_example(row: dict, config: SFTConfig) -> dict:
    """One judged row -> {"prompt": [...], "completion": [...]} in chat-message form."""
    prompt = build_conversation(row, config.prompt)
    content = final_content(row)
    reasoning = str(row.get("reasoning") or "").strip()
    assistant = {"role": "assistant", "content": content}
    if config.reasoning == "field" and reasoning:
        assistant["thinking"] = reasoning
    elif config.reasoning == "inline" and reasoning:
        fields = {**row, "reasoning": reasoning, "content": content}
        assistant["content"] = fill_template(config.inline_template, fields)
    example = {"prompt": prompt, "completion": [assistant]}
    if config.prompt.chat_template_kwargs:  # TRL's SFTTrainer passes a row's own kwargs to the template
        example["chat_template_kwargs"] = dict(config.prompt.chat_template_kwargs)
    return example


def load_examples(data: str | Path, config: SFTConfig) -> list[dict]:
    required = ["problem", "solution", "answer"] + (["reasoning"] if config.reasoning != "drop" else [])
    rows = read_records(data, required=required, types=dict.fromkeys(required, (str,)))
    if config.max_rows is not None:
        rows = rows[: config.max_rows]
    return [build_example(row, config) for row in rows]


# ---------------------------------------------------------------------------
# Batch arithmetic, layer freezing, trainer arguments


def gradient_accumulation_steps(global_batch: int, per_device: int, processes: int) -> int:
    """Accumulation that keeps `global_batch` sequences per optimizer step on `processes` devices."""
    per_step = per_device * processes
    if global_batch % per_step:
        raise ValueError(
            f"global_batch_size {global_batch} is not a multiple of per_device_batch_size {per_device} "
            f"x {processes} processes = {per_step}; change sft.global_batch_size or sft.per_device_batch_size"
        )
    return global_batch // per_step


def layers_to_train(model_dir: str | Path, mode: str) -> list[int] | None:
    """Decoder layers to train (None = the whole model) for `train_layers` = all | new | auto.

    `new` trains only the layers the upscale inserted; `auto` follows the upscale's own
    `freeze_original` choice recorded in upscale.json (and trains everything without one).
    """
    from ftllm.upscale import MANIFEST, trainable_layers

    if mode == "all":
        return None
    if mode == "auto":
        return trainable_layers(model_dir)
    record = Path(model_dir) / MANIFEST
    if not record.exists():
        raise InputError(f"{record}: not found, but sft.train_layers is 'new' (the model was not upscaled)")
    return [int(i) for i in json.loads(record.read_text(encoding="utf-8"))["new_layers"]]


def freeze_all_but_layers(model, layers: list[int]) -> int:
    """Freeze every parameter except those of decoder layers `layers`; returns the trainable count."""
    pattern = re.compile(r"\.layers\.(\d+)\.")
    keep = set(layers)
    trainable = 0
    for name, param in model.named_parameters():
        match = pattern.search(name)
        param.requires_grad = bool(match and int(match.group(1)) in keep)
        trainable += param.numel() if param.requires_grad else 0
    if trainable == 0:
        raise ValueError(f"no parameters left to train: layers {sorted(keep)} are not in the model")
    return trainable


def renders_thinking(tokenizer) -> bool:
    """Whether the chat template writes an assistant message's `thinking` into the text."""
    probe = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "thinking": "ZQXJ-probe"}]
    return "ZQXJ-probe" in tokenizer.apply_chat_template(probe, tokenize=False)


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def trainer_args(config: SFTConfig, checkpoint_dir: str | Path, processes: int, checkpointing: bool | None = None):
    """TRL SFTConfig for this run; `checkpointing` is the resolved gradient_checkpointing (resolve_checkpointing)."""
    from trl import SFTConfig as TRLSFTConfig

    accumulation = gradient_accumulation_steps(config.global_batch_size, config.per_device_batch_size, processes)
    scheduler_kwargs = {"min_lr_rate": config.min_lr_rate} if config.lr_scheduler_type == "cosine_with_min_lr" else {}
    if checkpointing is None:
        checkpointing = config.gradient_checkpointing is True
    shared = shared_trainer_args(config, checkpoint_dir, accumulation)
    shared["gradient_checkpointing"] = checkpointing
    return TRLSFTConfig(
        **shared,
        lr_scheduler_kwargs=scheduler_kwargs,
        max_length=config.max_length,
        packing=config.packing,
        packing_strategy=config.packing_strategy,
        padding_free=config.packing,
        completion_only_loss=True,
        eos_token=config.eos_token,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        use_liger_kernel=config.use_liger_kernel and liger_available(),
        include_num_input_tokens_seen="non_padding",
        dataset_num_proc=config.dataset_num_proc,
    )


# ---------------------------------------------------------------------------
# The stage


def resolve_checkpointing(config: SFTConfig, model_dir: str | Path, processes: int) -> bool:
    """gradient_checkpointing as set, or for `auto` the memory estimate for this model, batch and GPU count."""
    if config.gradient_checkpointing != "auto":
        return bool(config.gradient_checkpointing)
    from transformers import AutoConfig

    from ftllm.train.trainer import device_memory_bytes, needs_checkpointing

    memory = device_memory_bytes()
    if memory is None:  # CPU: nothing to size against, and recomputation only slows it down
        return False
    trains_all = layers_to_train(model_dir, config.train_layers) is None
    model_config = AutoConfig.from_pretrained(str(model_dir))
    checkpoint = needs_checkpointing(model_config, config.per_device_batch_size * config.max_length, processes,
                                     memory, trains_all=trains_all)  # fmt: skip
    log.info("gradient checkpointing %s (auto: %d tokens per micro-batch, %d processes, %.0f GB per GPU)",
             "on" if checkpoint else "off", config.per_device_batch_size * config.max_length, processes, memory / 2**30)
    return checkpoint


def build_trainer(config: SFTConfig, model_dir: str | Path, data: str | Path, checkpoint_dir: str | Path,
                  callbacks: tuple = (), live_dir: str | Path | None = None):
    """The stage's SFTTrainer (collator, model and arguments exactly as train_sft runs them) and run facts."""
    from datasets import Dataset
    from trl import SFTTrainer

    from ftllm.models import apply_template, load_model

    examples = load_examples(data, config)
    processes = world_size()
    checkpointing = resolve_checkpointing(config, model_dir, processes)
    args = trainer_args(config, checkpoint_dir, processes, checkpointing)  # also sets up the distributed state
    with args.main_process_first(local=False):  # rank 0 clears a stale folder before the others look in it
        fingerprint = run_fingerprint(config, model_dir, data)
        resume_from = prepare_checkpoint_dir(checkpoint_dir, fingerprint, is_main=args.process_index == 0)
    if config.use_liger_kernel and not args.use_liger_kernel:
        log.info("liger_kernel is not installed: training without its kernels")

    model, tokenizer = load_model(model_dir, dtype=config.dtype, attn_implementation=config.attn_implementation)
    apply_template(tokenizer, model, config.chat_template, config.eos_token)
    # transformers separates packed rows (from position_ids) only without a KV cache
    model.config.use_cache = False
    trainable = sum(p.numel() for p in model.parameters())
    if config.reasoning == "field" and not renders_thinking(tokenizer):
        log.warning("the chat template ignores `thinking`: the teacher reasoning is dropped (use reasoning: inline)")
    layers = layers_to_train(model_dir, config.train_layers)
    if layers is not None:
        trainable = freeze_all_but_layers(model, layers)
        log.info("training layers %s only (%d parameters)", layers, trainable)

    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        callbacks=[*callbacks, *live_callbacks(config, live_dir)],
    )
    facts = {"rows": len(examples), "trainable_params": trainable, "processes": processes,
             "gradient_checkpointing": checkpointing, "resume_from": resume_from}  # fmt: skip
    return trainer, facts


def train_sft(
    config: SFTConfig,
    model_dir: str | Path,
    data: str | Path,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    metrics_path: str | Path | None = None,
    loss_log_path: str | Path | None = None,
    callbacks: tuple = (),
    live_dir: str | Path | None = None,
) -> dict:
    """Fine-tune `model_dir` on the judged rows in `data`; save the model to `out_dir`; return metrics."""
    from ftllm.models import save_checkpoint

    trainer, facts = build_trainer(config, model_dir, data, checkpoint_dir, callbacks, live_dir)
    args, tokenizer, resume_from = trainer.args, trainer.processing_class, facts["resume_from"]
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    runtime_s = time.perf_counter() - started

    # FSDP / ZeRO-3 shard the weights: every rank takes part in gathering them, rank 0 writes.
    full_state = trainer.accelerator.get_state_dict(trainer.model)
    history = loss_history(trainer.state.log_history)
    metrics = {
        "rows": facts["rows"],
        "train_loss": result.training_loss,
        "final_loss": history[-1]["loss"] if history else None,
        "steps": trainer.state.global_step,
        "tokens": trainer.state.num_input_tokens_seen,
        "runtime_s": round(runtime_s, 2),
        "resumed_from_step": checkpoint_step(resume_from),
        "trainable_params": facts["trainable_params"],
        "processes": facts["processes"],
        "gradient_checkpointing": facts["gradient_checkpointing"],
        "packing": config.packing,
        "attn_implementation": config.attn_implementation,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
    }
    if trainer.accelerator.is_main_process:
        final = trainer.accelerator.unwrap_model(trainer.model)
        eos_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
        final.generation_config.eos_token_id = eos_id  # Open-R1: generation stops at the template's end token
        final.generation_config.pad_token_id = tokenizer.pad_token_id
        final.config.use_cache = True  # training turned the KV cache off
        save_checkpoint(final, tokenizer, out_dir, state_dict=full_state)
        if metrics_path:
            write_json(metrics_path, metrics)
        if loss_log_path:
            write_json(loss_log_path, history)
        if not config.keep_checkpoints:  # the run is complete: nothing left to resume
            for folder in Path(checkpoint_dir).glob("checkpoint-*"):
                shutil.rmtree(folder)
    trainer.accelerator.wait_for_everyone()
    return metrics
