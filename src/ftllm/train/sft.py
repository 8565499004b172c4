"""Supervised fine-tuning on judged teacher solutions (the `sft` stage), Open-R1 distill recipe.

Each judged row becomes one prompt-completion conversation:

    prompt     = [system (optional), user: prompt_template filled from the row]
    completion = [assistant: worked solution ending in \\boxed{answer},
                  teacher reasoning in `thinking` (field) / inside the content (inline) / dropped]

TRL's `SFTTrainer` renders both with the chat template and computes the loss on the
completion tokens only. Harmony templates (gpt-oss, llm-jp-4) put `thinking` in the
analysis channel; the tiny test model's ChatML template puts it in <think> tags.

The global batch (Open-R1: 128 sequences) is the same on any number of GPUs: gradient
accumulation is derived from it. Checkpoints go to a persistent folder so a killed run
resumes on rerun; a fingerprint of config + data + base model guards against resuming
a run that was made from other inputs.

    train_sft(config, model_dir, data, out_dir, checkpoint_dir, metrics_path, loss_log_path)
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
from ftllm.train.checkpoints import checkpoint_step, prepare_checkpoint_dir, run_fingerprint
from ftllm.train.launch import check_num_processes, world_size
from ftllm.train.trainer import loss_history, shared_trainer_args

log = logging.getLogger(__name__)

REASONING_MODES = ("field", "inline", "drop")


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """The `sft` params section. Defaults are Open-R1's OpenR1-Distill-7B recipe."""

    # data -> conversations. Templates use {key} for any field of the judged row; other braces stay literal.
    prompt_template: str = "{problem}\n\n最終的な答えを \\boxed{} の中に書いてください。"
    system_prompt: str | None = None
    reasoning: str = "field"  # field: `thinking` key | inline: inside content via inline_template | drop
    inline_template: str = "<think>\n{reasoning}\n</think>\n\n{content}"
    max_rows: int | None = None  # keep the first N rows (demo / smoke runs)
    # model and template
    dtype: str = "bfloat16"
    attn_implementation: str | None = "sdpa"
    chat_template: str | None = None  # jinja file replacing the tokenizer's template
    eos_token: str | None = None  # the template's end-of-turn token, e.g. <|return|> (harmony), <|im_end|> (ChatML)
    train_layers: str = "auto"  # all | new (only the upscale's inserted layers) | auto (as upscale.json says)
    # schedule (Open-R1 distill)
    learning_rate: float = 4.0e-5
    lr_scheduler_type: str = "cosine_with_min_lr"
    min_lr_rate: float = 0.1
    warmup_ratio: float = 0.03
    num_train_epochs: float = 5.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    weight_decay: float = 0.0
    max_grad_norm: float = 0.2
    seed: int = 42
    # batch and memory
    max_length: int = 16384
    global_batch_size: int = 128  # sequences per optimizer step, whatever the GPU count
    per_device_batch_size: int = 2
    packing: bool = False  # bfd packing (padding-free); Open-R1 trains unpacked
    gradient_checkpointing: bool = True
    use_liger_kernel: bool = True  # only applied when liger_kernel is importable
    bf16: bool = True
    # checkpoints and logs
    save_steps: int = 100
    save_total_limit: int = 2
    keep_checkpoints: bool = False  # after the final save, delete checkpoint-* (optimizer states are huge)
    logging_steps: int = 1
    dataset_num_proc: int | None = None
    # launch
    num_processes: Any = "auto"  # auto = every visible GPU (1 on CPU) | N
    accelerate_config: str = "configs/accelerate/fsdp2.yaml"

    def __post_init__(self) -> None:
        if self.reasoning not in REASONING_MODES:
            raise ValueError(f"reasoning must be one of {', '.join(REASONING_MODES)}, got {self.reasoning!r}")
        if self.train_layers not in ("all", "new", "auto"):
            raise ValueError(f"train_layers must be all, new or auto, got {self.train_layers!r}")
        for key in ("global_batch_size", "per_device_batch_size", "max_length", "save_steps", "logging_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {self.max_rows}")
        try:
            check_num_processes(self.num_processes)
        except ValueError as err:
            raise ValueError(str(err)) from None


# ---------------------------------------------------------------------------
# Rows -> prompt-completion conversations


def fill_template(template: str, row: dict) -> str:
    """Replace {key} by row[key]; braces that name no field (\\boxed{}) are left as written."""
    return re.sub(r"\{(\w+)\}", lambda m: str(row[m.group(1)]) if m.group(1) in row else m.group(0), template)


def final_content(row: dict) -> str:
    """The worked solution, made to end in \\boxed{answer} so the model learns the graded format."""
    solution = str(row["solution"]).rstrip()
    if "\\boxed{" in solution:
        return solution
    return f"{solution}\n\n\\boxed{{{row['answer']}}}"


def build_example(row: dict, config: SFTConfig) -> dict:
    """One judged row -> {"prompt": [...], "completion": [...]} in chat-message form."""
    prompt = []
    if config.system_prompt:
        prompt.append({"role": "system", "content": config.system_prompt})
    prompt.append({"role": "user", "content": fill_template(config.prompt_template, row)})
    content = final_content(row)
    reasoning = str(row.get("reasoning") or "").strip()
    assistant = {"role": "assistant", "content": content}
    if config.reasoning == "field" and reasoning:
        assistant["thinking"] = reasoning
    elif config.reasoning == "inline" and reasoning:
        assistant["content"] = fill_template(config.inline_template, {**row, "reasoning": reasoning, "content": content})
    return {"prompt": prompt, "completion": [assistant]}


def load_examples(data: str | Path, config: SFTConfig) -> list[dict]:
    required = ["problem", "solution", "answer"] + (["reasoning"] if config.reasoning != "drop" else [])
    rows = read_records(data, required=required, types={c: (str,) for c in required})
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


def trainer_args(config: SFTConfig, checkpoint_dir: str | Path, processes: int):
    """TRL SFTConfig for this run."""
    from trl import SFTConfig as TRLSFTConfig

    accumulation = gradient_accumulation_steps(config.global_batch_size, config.per_device_batch_size, processes)
    scheduler_kwargs = {"min_lr_rate": config.min_lr_rate} if config.lr_scheduler_type == "cosine_with_min_lr" else {}
    return TRLSFTConfig(
        **shared_trainer_args(config, checkpoint_dir, accumulation),
        lr_scheduler_kwargs=scheduler_kwargs,
        num_train_epochs=config.num_train_epochs,
        weight_decay=config.weight_decay,
        max_length=config.max_length,
        packing=config.packing,
        completion_only_loss=True,
        eos_token=config.eos_token,
        gradient_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        use_liger_kernel=config.use_liger_kernel and liger_available(),
        include_num_input_tokens_seen="non_padding",
        dataset_num_proc=config.dataset_num_proc,
    )


# ---------------------------------------------------------------------------
# The stage


def train_sft(
    config: SFTConfig,
    model_dir: str | Path,
    data: str | Path,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    metrics_path: str | Path | None = None,
    loss_log_path: str | Path | None = None,
    callbacks: tuple = (),
) -> dict:
    """Fine-tune `model_dir` on the judged rows in `data`; save the model to `out_dir`; return metrics."""
    from datasets import Dataset
    from trl import SFTTrainer

    from ftllm.models import apply_template, load_model, save_checkpoint

    examples = load_examples(data, config)
    processes = world_size()
    args = trainer_args(config, checkpoint_dir, processes)  # also sets up the distributed state
    with args.main_process_first(local=False):  # rank 0 clears a stale folder before the others look in it
        fingerprint = run_fingerprint(config, model_dir, data)
        resume_from = prepare_checkpoint_dir(checkpoint_dir, fingerprint, is_main=args.process_index == 0)
    if config.use_liger_kernel and not args.use_liger_kernel:
        log.info("liger_kernel is not installed: training without its kernels")

    model, tokenizer = load_model(model_dir, dtype=config.dtype, attn_implementation=config.attn_implementation)
    apply_template(tokenizer, model, config.chat_template, config.eos_token)
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
        callbacks=list(callbacks),
    )
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    runtime_s = time.perf_counter() - started

    # FSDP / ZeRO-3 shard the weights: every rank takes part in gathering them, rank 0 writes.
    full_state = trainer.accelerator.get_state_dict(trainer.model)
    history = loss_history(trainer.state.log_history)
    metrics = {
        "rows": len(examples),
        "train_loss": result.training_loss,
        "final_loss": history[-1]["loss"] if history else None,
        "steps": trainer.state.global_step,
        "tokens": trainer.state.num_input_tokens_seen,
        "runtime_s": round(runtime_s, 2),
        "resumed_from_step": checkpoint_step(resume_from),
        "trainable_params": trainable,
        "processes": processes,
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
