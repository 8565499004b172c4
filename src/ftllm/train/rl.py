"""Reinforcement learning with a verifiable math reward (the `rl` stage): TRL GRPO / DAPO / Dr.GRPO.

TRL's `GRPOTrainer` is the engine. What this module adds, each switched from params:

- prompts: judged rows with a known answer, rendered by the shared prompt contract (`ftllm.prompting`);
  optionally filtered by the SFT model's pass rate over k samples (`pass_rate_filter`), which
  drops problems it always or never solves: such groups have zero reward variance and teach nothing;
- rewards: names from `ftllm.train.rewards.REWARDS` with a weight each (`rewards`);
- loss aggregation: `loss_type` (grpo, dapo, dr_grpo, bnpo, cispo, sapo, luspo, vespo), clipping
  (`epsilon`, `epsilon_high`), KL `beta`, `scale_rewards`, `mask_truncated_completions`;
- zero-variance group filtering (`filter_zero_std_groups`): TRL 1.16 has no such switch, so the
  trainer subclass below masks those groups out of the loss *and* its token count after scoring
  (their advantage is already 0; what changes is that they no longer dilute the DAPO denominator);
- generation: transformers (`use_vllm: false`, the CPU/CI path) or vLLM (`vllm_mode: colocate |
  server`), and then always with TRL's importance-sampling correction for the sampler mismatch,
  by default token-level truncated IS (`is_mode: token_truncate`, ratios capped at `is_cap`);
- telemetry: per-step reward mean/std, completion lengths, clip fraction, per-group aggregation
  weights, and at each logged step the weights measured through TRL's own loss on one micro-batch
  (`ftllm.train.telemetry`), written to `<plots_dir>/{steps,groups,weights}.json` and through DVCLive
  to `<plots_dir>/dvclive` as training runs;
- resume: checkpoints in a persistent folder; a rerun after a kill resumes from the last one
  (telemetry is saved inside each checkpoint so the plots resume with it).

`mode: async` maps the same section onto `trl.experimental.async_grpo.AsyncGRPOTrainer`
(`max_staleness` = maximum policy lag). With `vllm_server_base_url` it uses that server (started
apart: `VLLM_SERVER_DEV_MODE=1 vllm serve <model> --logprobs-mode processed_logprobs
--weight-transfer-config '{"backend":"nccl"}'`, other GPUs). Without it, on one GPU,
`ftllm.train.rl_async` starts the server on the same card with `vllm_gpu_memory_utilization` of its
memory and syncs weights through CUDA IPC (NCCL refuses two ranks on one device). Its loss is
fixed token-level clipped PPO (DAPO aggregation) without KL, so the section refuses other settings.

    train_rl(config, model_dir, data, out_dir, checkpoint_dir, metrics_path, plots_dir)
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path

from ftllm.io import InputError, read_records, write_json
from ftllm.prompting import PromptSpec, build_conversation
from ftllm.train.checkpoints import checkpoint_step, prepare_checkpoint_dir, run_fingerprint
from ftllm.train.launch import distributed_state, world_size
from ftllm.train.rewards import select_rewards
from ftllm.train.telemetry import (
    LOSS_TYPES,
    DvcLiveSink,
    TelemetryLog,
    group_rows,
    measure_step_weights,
    step_row,
    trl_step_weights,
    weight_rows,
)
from ftllm.train.trainer import TrainerSettings, live_callbacks, shared_trainer_args

log = logging.getLogger(__name__)

TELEMETRY_DIR = "ftllm_telemetry"  # inside each checkpoint-N folder
PROMPTS_FILE = "rl_prompts.json"  # the selected prompt set, beside the checkpoints
IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")  # TRL 1.16's names
DVCLIVE_DIR = "dvclive"  # inside plots_dir
INDEX_KEY = "ftllm_completion_index"  # each completion's place in the generation batch, through TRL's shuffle
# besides the trained loss type, the weights each of these would give the same micro-batch (the probe is cheap)
PROBED_LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo")


@dataclasses.dataclass(frozen=True)
class PassRateFilter:
    """Sample the starting model k times per problem; keep problems solved at a rate in [min, max]."""

    k: int = 0  # samples per problem; 0 turns the filter off
    min_pass_rate: float = 0.01  # below: never solved, every reward 0, no signal
    max_pass_rate: float = 0.99  # above: always solved, no signal
    backend: str = "vllm"  # ftllm.engine backend: vllm | hf
    max_new_tokens: int = 1024
    temperature: float = 1.0
    max_model_len: int = 4096
    batch_size: int = 8  # hf backend: prompts per forward pass
    enforce_eager: bool = False  # vllm backend: skip torch.compile and CUDA graphs (start-up cost over speed)

    def __post_init__(self) -> None:
        if self.k < 0:
            raise ValueError(f"pass_rate_filter.k must be >= 0, got {self.k}")
        if not 0.0 <= self.min_pass_rate <= self.max_pass_rate <= 1.0:
            raise ValueError("pass_rate_filter needs 0 <= min_pass_rate <= max_pass_rate <= 1")


@dataclasses.dataclass(frozen=True)
class RLConfig(TrainerSettings):
    """The `rl` params section. Defaults follow DAPO on TRL 1.16 (token-level loss, clip-higher, no KL).

    Schedule, batch (`per_device_batch_size`: completions per forward pass), logging and launch keys
    are `TrainerSettings`'s.
    """

    mode: str = "sync"  # sync: GRPOTrainer | async: experimental AsyncGRPOTrainer (GPUs + vLLM server)
    # prompts: the top-level `prompt` section (sft, rl and predict share it)
    prompt: PromptSpec = dataclasses.field(default_factory=PromptSpec)
    max_prompts: int | None = None  # keep the first N usable rows (demo / smoke runs)
    pass_rate_filter: PassRateFilter = dataclasses.field(default_factory=PassRateFilter)
    # rewards: registry name -> weight
    rewards: dict[str, float] = dataclasses.field(default_factory=lambda: {"accuracy": 1.0})
    # objective
    loss_type: str = "dapo"
    beta: float = 0.0  # KL to the starting policy; 0 skips the reference model
    epsilon: float = 0.2
    epsilon_high: float | None = 0.28  # DAPO clip-higher
    scale_rewards: str = "group"  # group | batch | none (Dr.GRPO: none)
    mask_truncated_completions: bool = True  # DAPO overlong filtering
    filter_zero_std_groups: bool = False
    importance_sampling_level: str = "token"  # token | sequence (GSPO)
    num_iterations: int = 1
    # sampling
    num_generations: int = 8
    max_completion_length: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    # batch: prompts_per_step groups of num_generations completions per optimizer step
    prompts_per_step: int = 16
    max_steps: int = 200  # GRPO runs a step budget, not epochs over the prompts
    # model
    dtype: str = "bfloat16"
    # generation backend
    use_vllm: bool = False
    vllm_mode: str = "colocate"  # colocate: vLLM in the training process | server: `trl vllm-serve`
    vllm_gpu_memory_utilization: float = 0.3
    vllm_server_base_url: str | None = None
    # importance-sampling correction of the sampler/trainer mismatch (always on with vLLM). token_truncate is the
    # reference's per-token loss -A·ratio·min(rho, cap) (TIS); TRL 1.16's own default is sequence_mask
    is_mode: str = "token_truncate"  # token_truncate | token_mask | sequence_truncate | sequence_mask
    is_cap: float | None = 2.0  # C_max: truncate (or mask) ratios above it; null = no upper bound (mask modes)
    is_floor: float | None = None  # C_min: truncate (or mask) ratios below it; null = none
    # async mode
    max_staleness: int = 4  # maximum policy lag, in optimizer steps, of a rollout used for training
    weight_sync_steps: int = 1
    # 0: a micro-batch packs per_device_batch_size completions, so a step trains on prompts_per_step x
    # num_generations of them as in sync mode. > 0: TRL fills each row up to this many tokens instead, and a step's
    # completion count follows the lengths (TRL's own default, the server's max_model_len, put ~2,900 completions
    # into each step of rl_gpu's 128-completion toy on the H200: ~60 s a step)
    token_budget: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = {
            "mode": (self.mode, ("sync", "async")),
            "loss_type": (self.loss_type, LOSS_TYPES),
            "scale_rewards": (self.scale_rewards, ("group", "batch", "none")),
            "importance_sampling_level": (self.importance_sampling_level, ("token", "sequence")),
            "vllm_mode": (self.vllm_mode, ("colocate", "server")),
            "is_mode": (self.is_mode, IS_MODES),
        }
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
        for key in ("num_generations", "max_completion_length", "prompts_per_step", "max_steps", "num_iterations",
                    "max_staleness"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.token_budget < 0:
            raise ValueError(f"token_budget must be >= 0 (0: fixed completions per row), got {self.token_budget}")
        if self.num_generations < 2:
            raise ValueError("num_generations must be >= 2: advantages compare completions of one prompt")
        if self.is_mode.endswith("_truncate") and self.is_cap is None:
            raise ValueError(f"is_cap must be set for is_mode {self.is_mode}: truncation needs an upper bound")
        if self.is_cap is not None and self.is_cap <= 0:
            raise ValueError(f"is_cap must be > 0, got {self.is_cap}")
        if self.is_floor is not None and self.is_cap is not None and not 0 <= self.is_floor < self.is_cap:
            raise ValueError(f"is_floor must be in [0, is_cap={self.is_cap}), got {self.is_floor}")
        try:
            select_rewards(self.rewards)
        except ValueError as err:
            raise ValueError(f"rewards: {err}") from None
        if self.mode == "async":
            if self.loss_type != "dapo" or self.beta != 0.0:
                raise ValueError("mode async trains the token-level (dapo) loss without KL: set loss_type dapo, beta 0")
            if self.filter_zero_std_groups:
                raise ValueError("filter_zero_std_groups is implemented for mode sync only")


# ---------------------------------------------------------------------------
# Prompts


def build_prompt(row: dict, config: RLConfig) -> list[dict]:
    return build_conversation(row, config.prompt)


def load_prompts(data: str | Path, config: RLConfig) -> list[dict]:
    """Judged rows with a non-empty answer -> {"prompt", "answer", "id"} examples for TRL."""
    rows = read_records(data, required=["problem", "answer"], types={"problem": (str,), "answer": (str, int)})
    examples = [
        {"prompt": build_prompt(row, config), "answer": str(row["answer"]), "id": str(row.get("id", i))}
        for i, row in enumerate(rows)
        if str(row["answer"] or "").strip()
    ]
    if not examples:
        raise InputError(f"{data}: no row has a non-empty answer")
    return examples[: config.max_prompts] if config.max_prompts else examples


def measure_pass_rates(examples: list[dict], model_dir: str | Path, spec: PassRateFilter, seed: int,
                       chat_template_kwargs: dict | None = None) -> list[float]:
    """Fraction of `spec.k` samples of the starting model that the accuracy reward accepts, per example."""
    from ftllm.config import EngineSpec, SamplingSpec
    from ftllm.engine import make_engine
    from ftllm.train.rewards import accuracy

    engine_spec = EngineSpec(
        model=str(model_dir), backend=spec.backend, max_model_len=spec.max_model_len, seed=seed,
        batch_size=spec.batch_size, dtype="auto", enforce_eager=spec.enforce_eager,
    )  # fmt: skip
    sampling = SamplingSpec(n=spec.k, temperature=spec.temperature, max_new_tokens=spec.max_new_tokens, seed=seed)
    with make_engine(engine_spec) as engine:
        outputs = engine.chat([ex["prompt"] for ex in examples], sampling, **dict(chat_template_kwargs or {}))
    rates = []
    for ex, completions in zip(examples, outputs, strict=True):
        scores = accuracy([c.text for c in completions], [ex["answer"]] * len(completions))
        rates.append(sum(scores) / len(scores))
    return rates


def filter_by_pass_rate(examples: list[dict], rates: list[float], spec: PassRateFilter) -> list[dict]:
    return [ex for ex, rate in zip(examples, rates, strict=True) if spec.min_pass_rate <= rate <= spec.max_pass_rate]


# ---------------------------------------------------------------------------
# Trainer arguments


def gradient_accumulation_steps(config: RLConfig, processes: int) -> int:
    """Micro-steps per optimizer step so one step sees prompts_per_step full groups on any process count."""
    completions = config.prompts_per_step * config.num_generations
    per_micro = config.per_device_batch_size * processes
    if completions % per_micro:
        raise ValueError(
            f"prompts_per_step x num_generations = {completions} completions per step is not a multiple of "
            f"per_device_batch_size {config.per_device_batch_size} x {processes} processes; change rl.prompts_per_step "
            "or rl.per_device_batch_size"
        )
    return completions // per_micro


def _common_args(config: RLConfig, checkpoint_dir: str | Path, processes: int) -> dict:
    """The arguments the synchronous and the async GRPO configs share."""
    return dict(
        **shared_trainer_args(config, checkpoint_dir, gradient_accumulation_steps(config, processes)),
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        top_p=config.top_p,
        epsilon=config.epsilon,
        epsilon_high=config.epsilon_high,
    )


def grpo_args(config: RLConfig, checkpoint_dir: str | Path, processes: int = 1):
    """TRL GRPOConfig for the synchronous trainer."""
    from trl import GRPOConfig

    _, weights = select_rewards(config.rewards)
    vllm = {}
    if config.use_vllm:
        # the sampler's logprobs differ from the trainer's: always correct with TRL's importance sampling
        vllm = dict(
            vllm_mode=config.vllm_mode,
            vllm_gpu_memory_utilization=config.vllm_gpu_memory_utilization,
            vllm_importance_sampling_correction=True,
            vllm_importance_sampling_mode=config.is_mode,
            vllm_importance_sampling_clip_max=config.is_cap,
            vllm_importance_sampling_clip_min=config.is_floor,
        )
        if config.vllm_server_base_url:
            vllm["vllm_server_base_url"] = config.vllm_server_base_url
    return GRPOConfig(
        **_common_args(config, checkpoint_dir, processes),
        loss_type=config.loss_type,
        beta=config.beta,
        scale_rewards=config.scale_rewards,
        mask_truncated_completions=config.mask_truncated_completions,
        importance_sampling_level=config.importance_sampling_level,
        num_iterations=config.num_iterations,
        reward_weights=weights,
        chat_template_kwargs=dict(config.prompt.chat_template_kwargs),
        use_vllm=config.use_vllm,
        **vllm,
    )


def async_grpo_args(config: RLConfig, checkpoint_dir: str | Path, processes: int = 1):
    """TRL AsyncGRPOConfig: same batch and schedule (completions per micro-batch and per step, unless token_budget),
    the policy lag bounded by max_staleness."""
    from trl.experimental.async_grpo import AsyncGRPOConfig

    extra = {"vllm_server_base_url": config.vllm_server_base_url} if config.vllm_server_base_url else {}
    return AsyncGRPOConfig(
        **_common_args(config, checkpoint_dir, processes),
        dtype=config.dtype,
        max_staleness=config.max_staleness,
        weight_sync_steps=config.weight_sync_steps,
        token_budget=config.token_budget,
        **extra,
    )


# ---------------------------------------------------------------------------
# Trainer with telemetry hooks


def make_trainer_class():
    """GRPOTrainer that records group lengths and measured loss weights, and can drop zero-variance groups."""
    import torch
    from trl import GRPOTrainer

    class FtllmGRPOTrainer(GRPOTrainer):
        telemetry: TelemetryLog | None = None
        filter_zero_std_groups: bool = False

        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            if not self.model.training:
                return output
            group = self.num_generations
            if self.filter_zero_std_groups:
                self._mask_zero_std_groups(output, group)
            mask = output["completion_mask"]
            if "tool_mask" in output:
                mask = mask * output["tool_mask"]
            lengths = self.accelerator.gather(mask.sum(dim=1)).tolist()
            local = len(output["advantages"])
            output[INDEX_KEY] = self.accelerator.process_index * local + torch.arange(local, device=mask.device)
            self._ftllm_batch_lengths = lengths
            if self.telemetry is not None and self.accelerator.is_main_process:
                step = self.state.global_step + 1  # generation happens at the start of the step it feeds
                self.telemetry.add_groups(
                    group_rows(step, lengths, group, self.loss_type, self.max_completion_length)
                )
            return output

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            first_micro_batch = self._step % self.current_gradient_accumulation_steps == 0
            logged = (self.state.global_step + 1) % max(int(self.args.logging_steps), 1) == 0
            if self.telemetry is not None and self.model.training and first_micro_batch and logged:
                self._record_measured_weights(inputs)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        def _record_measured_weights(self, inputs) -> None:
            """Measured vs formula weights of this step's first micro-batch (main process's share), under the
            trained loss type and, on the same micro-batch, under each of PROBED_LOSS_TYPES."""
            trained = self.loss_type
            mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)
            lengths = [int(x) for x in mask.sum(dim=1).tolist()]
            accum, processes = self.current_gradient_accumulation_steps, self.accelerator.num_processes
            for loss_type in dict.fromkeys((trained, *PROBED_LOSS_TYPES)):
                self.loss_type = loss_type  # _compute_loss reads it; the probe runs no model
                try:
                    measured = measure_step_weights(self, inputs)  # every process: TRL's metric code gathers
                finally:
                    self.loss_type = trained
                if not self.accelerator.is_main_process:
                    continue
                formula = trl_step_weights(
                    lengths, loss_type, grad_accum=accum, processes=processes,
                    steps_per_generation=self.args.steps_per_generation,
                    generation_tokens=int(inputs["num_items_in_batch"]),
                    max_completion_length=self.max_completion_length,
                )  # fmt: skip
                rows = weight_rows(
                    self.state.global_step + 1, inputs[INDEX_KEY].tolist(), self._ftllm_batch_lengths,
                    self.num_generations, measured, formula, loss_type, self.max_completion_length,
                    completions_per_step=len(lengths) * accum * processes,
                )  # fmt: skip
                self.telemetry.add_weights([{**row, "trained": loss_type == trained} for row in rows])

        def _mask_zero_std_groups(self, output, group: int) -> None:
            # advantages are (r - group mean) / scale, so a zero-variance group has all-zero advantages
            advantages = self.accelerator.gather(output["advantages"].detach())
            flat = (advantages.view(-1, group).abs() < 1e-8).all(dim=1).repeat_interleave(group)
            local = len(output["advantages"])
            start = self.accelerator.process_index * local
            keep = (~flat[start : start + local]).to(output["completion_mask"].dtype).unsqueeze(1)
            output["completion_mask"] = output["completion_mask"] * keep
            loss_mask = output["completion_mask"] * output.get("tool_mask", 1)
            output["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()

    return FtllmGRPOTrainer


def make_telemetry_callback(telemetry: TelemetryLog, plots_dir: str | Path | None):
    from transformers import TrainerCallback

    class TelemetryCallback(TrainerCallback):
        """Adds a row per logged step, rewrites the plot files (JSON and DVCLive), and stores telemetry in each
        checkpoint."""

        sink: DvcLiveSink | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero and plots_dir:
                self.sink = DvcLiveSink(Path(plots_dir) / DVCLIVE_DIR, replay=telemetry)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and "reward" in logs:
                row = step_row(state.global_step, logs)
                telemetry.add_step(row)
                if plots_dir:
                    telemetry.save(plots_dir)
                if self.sink is not None:
                    self.sink.log_step(row)
                    self.sink.log_weights([w for w in telemetry.weights if w.get("trained", True)])

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                telemetry.save(Path(args.output_dir) / f"checkpoint-{state.global_step}" / TELEMETRY_DIR)

    return TelemetryCallback()


# ---------------------------------------------------------------------------
# The stage


def _build_trainer(config: RLConfig, model_dir, examples, args, telemetry, callbacks, weight_transfer=None):
    from datasets import Dataset

    from ftllm.models import load_model

    funcs, _ = select_rewards(config.rewards)
    dataset = Dataset.from_list(examples)
    if config.mode == "async":
        from transformers import AutoTokenizer
        from trl.experimental.async_grpo import AsyncGRPOTrainer

        from ftllm.train.rl_async import with_response_parser

        # the async trainer loads the model itself (FSDP2) and names it to the vLLM server by path
        return AsyncGRPOTrainer(
            model=str(model_dir), reward_funcs=funcs, args=args, train_dataset=dataset, callbacks=callbacks,
            weight_transfer=weight_transfer,
            processing_class=with_response_parser(AutoTokenizer.from_pretrained(model_dir)),
        )  # fmt: skip
    model, tokenizer = load_model(model_dir, dtype=config.dtype)
    trainer = make_trainer_class()(
        model=model, reward_funcs=funcs, args=args, train_dataset=dataset, processing_class=tokenizer,
        callbacks=callbacks,
    )  # fmt: skip
    trainer.telemetry = telemetry
    trainer.filter_zero_std_groups = config.filter_zero_std_groups
    return trainer


def _same_device_server(config: RLConfig, model_dir, args, checkpoint_dir: Path, stack: contextlib.ExitStack):
    """mode async without a server URL: a vLLM server on this GPU (its memory share), weights over CUDA IPC."""
    from trl.experimental.async_grpo.vllm_client import VLLMClient

    from ftllm.train.rl_async import CudaIpcWeightTransfer, VllmServer

    if world_size() != 1:
        raise ValueError("rl.mode async without rl.vllm_server_base_url runs on one GPU (one process); "
                         "on several GPUs start the vLLM server apart and set rl.vllm_server_base_url")  # fmt: skip
    server = stack.enter_context(VllmServer(
        model_dir, config.vllm_gpu_memory_utilization, max_model_len=None,
        dtype=config.dtype, log_path=checkpoint_dir / "vllm_server.log",
    ))  # fmt: skip
    args.vllm_server_base_url = server.url
    return CudaIpcWeightTransfer(VLLMClient(server.url, args.vllm_server_timeout))


def select_prompts(config: RLConfig, model_dir, data) -> tuple[list[dict], dict]:
    """The RL prompt set and counts describing how it was chosen."""
    examples = load_prompts(data, config)
    counts = {"prompts_with_answer": len(examples)}
    spec = config.pass_rate_filter
    if spec.k:
        rates = measure_pass_rates(examples, model_dir, spec, config.seed, config.prompt.chat_template_kwargs)
        examples = filter_by_pass_rate(examples, rates, spec)
        counts.update(
            pass_rate_mean=sum(rates) / len(rates),
            never_solved=sum(r < spec.min_pass_rate for r in rates),
            always_solved=sum(r > spec.max_pass_rate for r in rates),
        )
        if not examples:
            raise InputError(f"{data}: the pass-rate filter left no prompt "
                             f"(rates in [{spec.min_pass_rate}, {spec.max_pass_rate}])")
    counts["prompts"] = len(examples)
    return examples, counts


def cached_prompts(config: RLConfig, model_dir, data, cache: Path) -> tuple[list[dict], dict]:
    """`select_prompts`, kept next to the checkpoints so a resumed run (or another rank) does not sample again."""
    if cache.exists():
        saved = json.loads(cache.read_text(encoding="utf-8"))
        return saved["examples"], saved["counts"]
    examples, counts = select_prompts(config, model_dir, data)
    write_json(cache, {"examples": examples, "counts": counts})
    return examples, counts


def train_rl(
    config: RLConfig,
    model_dir: str | Path,
    data: str | Path,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    metrics_path: str | Path | None = None,
    plots_dir: str | Path | None = None,
    callbacks: tuple = (),
    live_dir: str | Path | None = None,
) -> dict:
    """Train `model_dir` with GRPO on the judged prompts in `data`; save the policy to `out_dir`; return metrics."""
    from ftllm.models import save_checkpoint

    state = distributed_state()
    with state.main_process_first():  # rank 0 clears stale checkpoints and samples the pass rates; the rest read
        resume_from = prepare_checkpoint_dir(checkpoint_dir, run_fingerprint(config, model_dir, data),
                                             is_main=state.is_main_process)
        examples, counts = cached_prompts(config, model_dir, data, Path(checkpoint_dir) / PROMPTS_FILE)
    if len(examples) < config.prompts_per_step:
        # TRL's sampler drops a last chunk smaller than one step: the run would train nothing and save the start
        raise InputError(f"{data}: {len(examples)} RL prompt(s) left after the pass-rate filter, fewer than one "
                         f"step's rl.prompts_per_step = {config.prompts_per_step}; keep more rows or lower it")
    processes = world_size()
    args = (async_grpo_args if config.mode == "async" else grpo_args)(config, checkpoint_dir, processes)

    telemetry = TelemetryLog()
    if resume_from:  # the plots continue from what the checkpoint had seen
        telemetry = TelemetryLog.load(Path(resume_from) / TELEMETRY_DIR)
        telemetry.truncate(checkpoint_step(resume_from))
    callbacks = [make_telemetry_callback(telemetry, plots_dir), *callbacks, *live_callbacks(config, live_dir)]
    with contextlib.ExitStack() as stack:
        weight_transfer = None
        if config.mode == "async":  # with a server URL too: TRL would fetch its attention kernel from the hub
            from ftllm.train.rl_async import use_local_tree_attention

            log.info("async RL: tree attention through %s", use_local_tree_attention())
        if config.mode == "async" and not config.vllm_server_base_url:
            weight_transfer = _same_device_server(config, model_dir, args, Path(checkpoint_dir), stack)
        trainer = _build_trainer(config, model_dir, examples, args, telemetry, callbacks, weight_transfer)
        started = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=resume_from)
        runtime_s = time.perf_counter() - started

    if trainer.state.global_step == 0:  # never cache the untrained start as the RL policy
        raise InputError(f"{data}: RL ran no optimizer step on {len(examples)} prompt(s); nothing was trained")
    full_state = trainer.accelerator.get_state_dict(trainer.model)
    steps = telemetry.steps
    metrics = {
        **counts,
        "mode": config.mode,
        "loss_type": config.loss_type,
        "steps": trainer.state.global_step,
        "tokens": int(trainer.state.num_input_tokens_seen or 0),  # prompts and completions, as TRL counts them
        "resumed_from_step": checkpoint_step(resume_from),
        "train_loss": result.training_loss,
        "reward_first": steps[0].get("reward_mean") if steps else None,
        "reward_last": steps[-1].get("reward_mean") if steps else None,
        "reward_mean": _mean(r.get("reward_mean") for r in steps),
        "completion_length_mean": _mean(r.get("completion_length_mean") for r in steps),
        "clip_fraction_mean": _mean(r.get("clip_fraction") for r in steps),
        "runtime_s": round(runtime_s, 2),
        "processes": processes,
    }
    if trainer.accelerator.is_main_process:
        policy = trainer.accelerator.unwrap_model(trainer.model)
        policy.config.use_cache = True  # training turned the KV cache off
        save_checkpoint(policy, trainer.processing_class, out_dir, state_dict=full_state)
        if metrics_path:
            write_json(metrics_path, metrics)
        if plots_dir:
            telemetry.save(plots_dir)
    trainer.accelerator.wait_for_everyone()
    return metrics


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None
