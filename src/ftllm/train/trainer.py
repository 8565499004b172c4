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


def loss_history(log_history: list[dict]) -> list[dict]:
    """Per-step training loss records (from `trainer.state.log_history`) for the DVC plot."""
    return [
        {"step": entry["step"], "loss": entry["loss"], "learning_rate": entry.get("learning_rate")}
        for entry in log_history
        if "loss" in entry and "step" in entry
    ]
