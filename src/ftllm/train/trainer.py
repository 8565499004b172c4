"""What the training stages' transformers/TRL trainers have in common.

cpt (transformers `TrainingArguments`), sft (TRL `SFTConfig`) and rl (TRL `GRPOConfig`,
`AsyncGRPOConfig`) all take the same schedule, batch, precision and save settings from their
params sections; each stage adds its own keys to `shared_trainer_args`.
"""
from __future__ import annotations

from pathlib import Path


def shared_trainer_args(config, checkpoint_dir: str | Path, gradient_accumulation_steps: int) -> dict:
    """Trainer keyword arguments every stage sets the same way from its params section."""
    return dict(
        output_dir=str(checkpoint_dir),
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio,  # a float < 1 is a ratio of the total steps in transformers 5
        max_steps=config.max_steps,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        bf16=config.bf16,
        gradient_checkpointing=config.gradient_checkpointing,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        report_to="none",
    )


# Activation bytes per token per decoder layer in bf16 without recomputation, for a transformer layer whose
# attention keeps no s x s scores (flash / flex): 34·hidden (Korthikanti et al. 2022, "Reducing Activation
# Recomputation in Large Transformer Models", Table 2 without the 5·a·s term).
ACTIVATION_BYTES_PER_HIDDEN = 34
# bf16 weights + bf16 grads + fp32 Adam moments and master weights: 2 + 2 + 12 bytes per trained parameter
TRAINED_PARAM_BYTES = 16
MEMORY_HEADROOM = 0.85  # allocator fragmentation, logits, CUDA context


def device_memory_bytes() -> int | None:
    """Memory of one GPU, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory


def needs_checkpointing(model_config, tokens_per_micro_batch: int, processes: int, memory_bytes: int,
                        trains_all: bool = True) -> bool:
    """Whether a micro-batch's activations plus this GPU's share of weights and optimizer state overflow memory.

    The rule behind `gradient_checkpointing: auto`: states are sharded over `processes` (FSDP2), activations
    are not; recompute only when the estimate exceeds MEMORY_HEADROOM of the card. A 1B model on a 16k-token
    pack fits an H200 easily (no recomputation, ~1/3 less compute); a 12B up-scaled model does not.
    """
    hidden, layers = model_config.hidden_size, model_config.num_hidden_layers
    params = _parameter_count(model_config)
    per_param = TRAINED_PARAM_BYTES if trains_all else 2  # frozen weights: bf16 only (trained layers ignored)
    states = per_param * params / max(1, processes)
    activations = ACTIVATION_BYTES_PER_HIDDEN * hidden * layers * tokens_per_micro_batch
    return states + activations > MEMORY_HEADROOM * memory_bytes


def _parameter_count(model_config) -> int:
    """Parameters of a Llama-style decoder from its config (embeddings and head included)."""
    hidden, layers = model_config.hidden_size, model_config.num_hidden_layers
    ffn = getattr(model_config, "intermediate_size", 4 * hidden)
    heads = model_config.num_attention_heads
    kv_heads = getattr(model_config, "num_key_value_heads", None) or heads
    head_dim = getattr(model_config, "head_dim", None) or hidden // heads
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    per_layer = attention + 3 * hidden * ffn + 2 * hidden
    embeddings = model_config.vocab_size * hidden * (1 if getattr(model_config, "tie_word_embeddings", False) else 2)
    return layers * per_layer + embeddings + hidden


def loss_history(log_history: list[dict]) -> list[dict]:
    """Per-step training loss records (from `trainer.state.log_history`) for the DVC plot."""
    return [
        {"step": entry["step"], "loss": entry["loss"], "learning_rate": entry.get("learning_rate")}
        for entry in log_history
        if "loss" in entry and "step" in entry
    ]
