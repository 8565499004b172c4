"""RL throughput: optimizer steps/s and generated tokens/s of the `rl` stage's library call.

CPU (tiny random model, transformers generation), the numbers kept in benchmarks/results:

    python benchmarks/rl_throughput.py --out benchmarks/results/rl_throughput.json

GPU with vLLM colocated in the training process (not run here: no GPU in CI):

    python benchmarks/rl_throughput.py --model models/sft --use-vllm --vllm-mode colocate --dtype bfloat16 \
        --num-generations 8 --max-completion-length 1024 --prompts-per-step 8 --steps 10 \
        --out benchmarks/results/rl_throughput_gpu.json

Generation dominates an RL step, so tokens/s is the number to watch; the first step pays for
compilation/warm-up and is reported separately.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from ftllm.provenance import provenance


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder (default: build the tiny random model)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=32)
    parser.add_argument("--prompts-per-step", type=int, default=2)
    parser.add_argument("--per-device-batch-size", type=int, default=8)
    parser.add_argument("--loss-type", default="dapo")
    parser.add_argument("--dtype", default="float32", help="float32 on CPU, bfloat16 on GPU")
    parser.add_argument("--use-vllm", action="store_true")
    parser.add_argument("--vllm-mode", default="colocate", choices=["colocate", "server"])
    parser.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.3)
    parser.add_argument("--out", default="benchmarks/results/rl_throughput.json")
    return parser.parse_args(argv)


def run(args) -> dict:
    import torch

    from ftllm.config import build
    from ftllm.io import write_records
    from ftllm.tiny import build_tiny_model
    from ftllm.train.rl import RLConfig, train_rl
    from ftllm.train.telemetry import TelemetryLog

    work = Path(tempfile.mkdtemp(prefix="rl-bench-"))
    model = args.model or build_tiny_model(work / "tiny")
    data = work / "kept.parquet"
    write_records(data, [{"id": str(i), "problem": f"{i} + {i + 1} = ?", "answer": str(2 * i + 1)} for i in range(64)])
    config = build(RLConfig, {
        "num_generations": args.num_generations, "max_completion_length": args.max_completion_length,
        "prompts_per_step": args.prompts_per_step, "per_device_batch_size": args.per_device_batch_size,
        "loss_type": args.loss_type, "max_steps": args.steps, "save_steps": 10**6, "dtype": args.dtype,
        "bf16": args.dtype == "bfloat16", "gradient_checkpointing": torch.cuda.is_available(),
        "mask_truncated_completions": False, "use_vllm": args.use_vllm, "vllm_mode": args.vllm_mode,
        "vllm_gpu_memory_utilization": args.vllm_gpu_memory_utilization, "num_processes": 1,
        "rewards": {"accuracy": 1.0, "single_box": 0.1},
    }, "rl")  # fmt: skip
    metrics = train_rl(config, model, data, work / "out", work / "ckpt", plots_dir=work / "plots")
    steps = TelemetryLog.load(work / "plots").steps
    completions = args.prompts_per_step * args.num_generations
    tokens = sum(s["completion_length_mean"] * completions for s in steps)
    return {
        "steps": metrics["steps"],
        "runtime_s": metrics["runtime_s"],
        "steps_per_s": metrics["steps"] / metrics["runtime_s"],
        "generated_tokens": tokens,
        "generated_tokens_per_s": tokens / metrics["runtime_s"],
        "completions_per_step": completions,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    result = {
        "load_average_1m_at_start": os.getloadavg()[0],  # shared CPU boxes: other jobs slow every number
        **provenance(),
        "generation": "vllm-" + args.vllm_mode if args.use_vllm else "transformers",
        "model": args.model or "tiny random llama (4 layers, hidden 128)",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        **run(args),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
