"""What the training stages' transformers/TRL trainers have in common.

cpt (transformers `TrainingArguments`), sft (TRL `SFTConfig`) and rl (TRL `GRPOConfig`,
`AsyncGRPOConfig`) take the same schedule, batch, precision, save, logging and launch settings:
`TrainerSettings`, the fields their params sections share (CPTConfig, SFTConfig and RLConfig extend
it, so the YAML keys stay flat: `sft.learning_rate`). Its defaults are generic; each stage's recipe
values are deliberate choices in conf/config.yaml. `shared_trainer_args` turns it into trainer
keywords; each stage adds its own.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ftllm.train.launch import FsdpSettings, check_num_processes

REPORTERS = ("dvclive", "trackio", "wandb", "tensorboard", "mlflow")  # transformers' `report_to` integrations


@dataclasses.dataclass(frozen=True)
class TrainerSettings:
    """Keys every training section has (cpt, sft, rl)."""

    # schedule
    learning_rate: float = 5.0e-5
    lr_scheduler_type: str = "linear"  # any transformers scheduler name
    warmup_ratio: float = 0.0  # share of the total steps
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    # batch, memory, precision
    per_device_batch_size: int = 1
    gradient_checkpointing: bool = True
    bf16: bool = True  # mixed precision; false on CPU
    # checkpoints and logs
    save_steps: int = 100
    save_total_limit: int = 2
    logging_steps: int = 1
    report_to: list[str] = ()  # loggers of each logged step (transformers integrations); [] = none
    # launch: every visible GPU through `accelerate launch` with this config (1 process on a CPU box)
    num_processes: Any = "auto"  # auto | N
    accelerate_config: str = "conf/accelerate/ddp.yaml"
    fsdp: FsdpSettings = dataclasses.field(default_factory=FsdpSettings)  # applied when that config is FSDP

    def __post_init__(self) -> None:
        for key in ("per_device_batch_size", "save_steps", "logging_steps", "save_total_limit"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        unknown = [r for r in self.report_to if r not in REPORTERS]
        if unknown:
            raise ValueError(f"report_to: unknown logger(s) {', '.join(unknown)}; known: {', '.join(REPORTERS)}")
        check_num_processes(self.num_processes)


def shared_trainer_args(config: TrainerSettings, checkpoint_dir: str | Path, gradient_accumulation_steps: int) -> dict:
    """Trainer keyword arguments every stage sets the same way from its `TrainerSettings`."""
    return dict(
        output_dir=str(checkpoint_dir),
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio,  # a float < 1 is a ratio of the total steps in transformers 5
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        weight_decay=config.weight_decay,
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
        # DVCLive comes as `live_callbacks` instead: transformers' own would log to ./dvclive from every stage
        report_to=[r for r in config.report_to if r != "dvclive"] or "none",
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
def live_callbacks(config: TrainerSettings, live_dir: str | Path | None) -> list:
    """DVCLive's Trainer callback logging to `live_dir` (the stage's own folder), on rank 0 only.

    Every logged step (loss, learning rate, grad norm, rewards) becomes `live_dir/plots/metrics/*.tsv`
    and the last values `live_dir/metrics.json`, which dvc.yaml declares, so `dvc plots show` and
    `dvc exp show` read them as they are.
    """
    if "dvclive" not in config.report_to or live_dir is None:
        return []
    from ftllm.train.launch import is_main_process

    if not is_main_process():
        return []
    from dvclive import Live
    from scmrepo.exceptions import SCMError
    from transformers.integrations import DVCLiveCallback

    try:
        live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
    except SCMError as err:
        from ftllm.config import ConfigError

        raise ConfigError(f"report_to: dvclive: {err}: DVCLive needs a git repo with a commit "
                          "(or drop dvclive from report_to)") from None
    return [DVCLiveCallback(live=live)]


def loss_history(log_history: list[dict]) -> list[dict]:
    """Per-step training loss records (from `trainer.state.log_history`) for the DVC plot."""
    return [
        {"step": entry["step"], "loss": entry["loss"], "learning_rate": entry.get("learning_rate")}
        for entry in log_history
        if "loss" in entry and "step" in entry
    ]
