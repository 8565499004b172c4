"""Toy learning check for the RL stage: single-digit addition on the tiny random model.

1. SFT (ftllm.train.sft) briefly on a+b= -> \\boxed{a+b}, stopped early so the model is only
   partly right: RL needs groups where some samples are right and some wrong.
2. Measure the sampled pass rate (temperature 1, k samples per problem, the accuracy reward).
3. RL (ftllm.train.rl, GRPO/DAPO with the accuracy reward) for a few dozen steps.
4. Measure the pass rate again; the record goes to benchmarks/results/rl_toy.json.

    python benchmarks/rl_toy_addition.py --out benchmarks/results/rl_toy.json

The mean reward rising from step 2 to step 4 (and along the RL curve) is the check that the
reward, the advantages and the loss push the policy the right way.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ftllm.provenance import provenance


def problems() -> list[dict]:
    return [
        {"id": f"{a}+{b}", "problem": f"{a}+{b}=", "answer": str(a + b), "solution": f"\\boxed{{{a + b}}}"}
        for a in range(10)
        for b in range(10)
    ]


def pass_rate(model, data, k: int, seed: int) -> float:
    from ftllm.config import build
    from ftllm.train.rl import PassRateFilter, RLConfig, load_prompts, measure_pass_rates

    examples = load_prompts(data, build(RLConfig, {"prompt": {"system_prompt": None, "answer_instruction": None}}))
    spec = PassRateFilter(k=k, backend="hf", max_new_tokens=8, temperature=1.0, batch_size=100)
    rates = measure_pass_rates(examples, model, spec, seed=seed)
    return sum(rates) / len(rates)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft-steps", type=int, default=120)
    parser.add_argument("--sft-lr", type=float, default=2e-3)
    parser.add_argument("--rl-steps", type=int, default=60)
    parser.add_argument("--rl-lr", type=float, default=1e-4)  # 5e-4 collapsed the policy to 0 reward within 10 steps
    parser.add_argument("--loss-type", default="dapo")
    parser.add_argument("--k", type=int, default=8, help="samples per problem when measuring the pass rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/rl_toy.json")
    args = parser.parse_args(argv)

    import torch

    from ftllm.config import build
    from ftllm.io import write_records
    from ftllm.tiny import build_tiny_model
    from ftllm.train.rl import RLConfig, train_rl
    from ftllm.train.sft import SFTConfig, train_sft

    torch.manual_seed(args.seed)
    work = Path(tempfile.mkdtemp(prefix="rl-toy-"))
    data = work / "addition.parquet"
    write_records(data, problems())
    base = build_tiny_model(work / "base", seed=args.seed)

    started = time.perf_counter()
    sft = build(SFTConfig, {
        "prompt": {"system_prompt": None, "answer_instruction": None}, "reasoning": "drop", "dtype": "float32",
        "bf16": False,
        "attn_implementation": "sdpa", "learning_rate": args.sft_lr, "lr_scheduler_type": "constant",
        "warmup_ratio": 0.0, "max_steps": args.sft_steps, "max_length": 64, "global_batch_size": 20,
        "per_device_batch_size": 20, "gradient_checkpointing": False, "use_liger_kernel": False,
        "save_steps": 10**6, "num_processes": 1, "seed": args.seed,
    }, "sft")  # fmt: skip
    train_sft(sft, base, data, work / "sft", work / "sft-ckpt")
    before = pass_rate(work / "sft", data, args.k, args.seed)

    rl = build(RLConfig, {
        "prompt": {"system_prompt": None, "answer_instruction": None}, "rewards": {"accuracy": 1.0},
        "loss_type": args.loss_type,
        "num_generations": 8, "max_completion_length": 8, "prompts_per_step": 4, "per_device_batch_size": 32,
        "max_steps": args.rl_steps, "learning_rate": args.rl_lr, "dtype": "float32", "bf16": False,
        "gradient_checkpointing": False, "save_steps": 10**6, "num_processes": 1, "seed": args.seed,
        "mask_truncated_completions": False,
    }, "rl")  # fmt: skip
    metrics = train_rl(rl, work / "sft", data, work / "rl", work / "rl-ckpt", plots_dir=work / "plots")
    after = pass_rate(work / "rl", data, args.k, args.seed)
    curve = [s["reward_mean"] for s in json.loads((work / "plots" / "steps.json").read_text())]
    third = max(len(curve) // 3, 1)

    result = {
        **provenance(),
        "torch_threads": torch.get_num_threads(),
        "task": "single-digit addition a+b= -> \\boxed{a+b}, 100 problems, tiny random llama (4 layers, hidden 128)",
        "settings": vars(args),
        "pass_rate_after_sft": before,
        "pass_rate_after_rl": after,
        "rl_reward_first_third": sum(curve[:third]) / third,
        "rl_reward_last_third": sum(curve[-third:]) / third,
        "rl_reward_curve": curve,
        "rl_steps": metrics["steps"],
        "runtime_s": round(time.perf_counter() - started, 1),
        "learned": after > before,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "rl_reward_curve"}, indent=2))


if __name__ == "__main__":
    main()
