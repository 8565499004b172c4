"""Sharded training on several GPUs through the stages' own launch path: FSDP2 against ZeRO-3, and scaling.

Every run is the stage's training function (`ftllm.train.sft.train_sft`, or `ftllm.train.cpt.train_cpt`
with `--stage cpt`) started the way `stages/sft.py` starts it: this script re-executes itself with
`ftllm.train.launch.relaunch_if_needed(num_processes, accelerate_config)`, i.e. under `accelerate launch`
with the params' accelerate config, and each rank writes what it measured. Runs, all on random weights
with ftllm's small test tokenizer and random-text rows (lengths between --min-len and --max-len tokens):

- fsdp2     the reference's shape grown to 48 layers (hidden 4096, FFN 14336, 32/8 heads, vocab 128256,
            ~11.5B parameters: too big for one card with optimizer state) on all --gpus GPUs with the
            section's accelerate config (conf/accelerate/fsdp2.yaml in the full profile)
- fsdp2_keep  as fsdp2 with `fsdp.reshard_after_forward: false` (gathered layers kept until backward: one
            all-gather less per layer, every layer whole at once): what the default's memory buys
- zero3     the same model and data under conf/accelerate/zero3.yaml (needs deepspeed; a missing
            package is recorded as the run's error)
- small_1   the same layer shape with --small-layers layers (default 8, ~2.8B: fits one card with its
            optimizer state, no activation recomputation) on one GPU: the plain single-process path
- small_n   that small model on all --gpus GPUs with the section's accelerate config

    scaling_efficiency = tokens/s per GPU (small_n) / tokens/s (small_1)

Overridden in every run, and recorded: max_steps (warmup + timed steps), one micro-batch per GPU per
optimizer step (global batch = per-device batch x GPUs), saving only at the end. MFU counts real tokens
against the bf16 matmul peak each rank measures before it trains (FLOPs/token as in sft_mfu.py; for CPT,
where DoRA leaves the base frozen, 4N instead of 6N: no weight gradients for the frozen matrices).

    python benchmarks/sft_fsdp.py --gpus 8                 # -> benchmarks/results/sft_fsdp_8xh200.json
    python benchmarks/sft_fsdp.py --gpus 8 --stage cpt     # -> benchmarks/results/cpt_fsdp_8xh200.json
    python benchmarks/sft_fsdp.py --tiny --gpus 2 --out /tmp/sft_fsdp.json   # CPU: 2 gloo processes

A kept --workdir is reused by the next call (models and data when the settings match, and the runs already
done), so the runs can go one call each where a command may only run for minutes:

    python benchmarks/sft_fsdp.py --gpus 8 --workdir /tmp/sftw --runs small_1   # ... then small_n, fsdp2, ...

On CPU accelerate cannot shard (FSDP needs a GPU distributed type), so --tiny runs its multi-process runs
with conf/accelerate/cpu.yaml (data parallel over gloo): it proves the launch, per-rank measurement and
aggregation, not FSDP itself.
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
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE_48 = dict(hidden=4096, layers=48, heads=32, kv_heads=8, ffn=14336, vocab=128256)
SHAPE_TINY = dict(hidden=64, layers=4, heads=4, kv_heads=2, ffn=128, vocab=512)
RUNS = ("fsdp2", "fsdp2_keep", "zero3", "small_1", "small_n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["sft", "cpt"], default="sft")
    p.add_argument("--params", default=str(ROOT / "params.yaml"), help="params file whose stage section is run")
    p.add_argument("--gpus", type=int, default=None, help="processes of the multi-GPU runs (default: visible GPUs)")
    p.add_argument("--tiny", action="store_true", help="tiny shape, short rows, CPU processes: a harness check")
    p.add_argument("--layers", type=int, default=None, help="layers of the big model (default 48)")
    p.add_argument("--small-layers", type=int, default=None, help="layers of the one-GPU model (default 8)")
    p.add_argument("--accelerate-config", default=None,
                   help="config of the multi-GPU runs (default: the section's; cpu.yaml without GPUs)")
    p.add_argument("--zero3-config", default=str(ROOT / "conf" / "accelerate" / "zero3.yaml"))
    p.add_argument("--min-len", type=int, default=None, help="shortest row in tokens (default 256)")
    p.add_argument("--max-len", type=int, default=None, help="longest row in tokens (default 4096)")
    p.add_argument("--steps", type=int, default=None, help="timed optimizer steps per run (default 10)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3)")
    p.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of " + ", ".join(RUNS))
    p.add_argument("--timeout", type=int, default=3600, help="seconds one run may take")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="where models and data go (default: a temporary folder)")
    p.add_argument("--out", default=None, help="default benchmarks/results/<stage>_fsdp_<n>x<card>.json")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one run's spec (internal)
    args = p.parse_args(argv)
    if args.worker:
        return args
    args.shape = dict(SHAPE_TINY if args.tiny else SHAPE_48)
    args.shape["layers"] = args.layers or args.shape["layers"]
    args.small_layers = args.small_layers or (2 if args.tiny else 8)
    defaults = dict(min_len=(16, 256), max_len=(96, 4096), steps=(2, 10), warmup=(1, 3))
    for key, (tiny, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else full)
    unknown = set(args.runs.split(",")) - set(RUNS)
    if unknown:
        p.error(f"--runs: unknown {', '.join(sorted(unknown))}; choose from {', '.join(RUNS)}")
    return args


# ---------------------------------------------------------------------------
# The parent: models, data, one launch per run, the report


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def write_inputs(args, work: Path, stage_section) -> dict:
    """Big and small random models, and the rows (sft) or corpus (cpt) every run reads; those of an earlier
    call with the same --workdir and settings are reused (writing the 48-layer model takes minutes)."""
    from transformers import AutoTokenizer

    record = work / f"inputs-{args.stage}.json"
    settings = {k: getattr(args, k) for k in ("stage", "shape", "small_layers", "min_len", "max_len", "steps",
                                              "warmup", "gpus", "seed", "tiny")}  # fmt: skip
    if record.exists():
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved["settings"] == settings:
            print(f"reusing the models and data in {work}", flush=True)
            return saved["inputs"]

    from sft_stage_mfu import row_lengths, write_model, write_rows

    models = {}
    for name, layers in (("big", args.shape["layers"]), ("small", args.small_layers)):
        shape = argparse.Namespace(**{**args.shape, "layers": layers, "seed": args.seed})
        folder, params = write_model(shape, work / f"model-{name}")
        models[name] = {"dir": str(folder), "layers": layers, "params_no_embedding": params}
    tokenizer = AutoTokenizer.from_pretrained(models["small"]["dir"])
    gpus = max(args.gpus, 1)
    tokens_needed = 1.5 * (args.warmup + args.steps) * gpus * max_tokens_per_micro_batch(args, stage_section)
    count = int(tokens_needed / ((args.min_len + args.max_len) / 2)) + 16
    data = work / ("kept.parquet" if args.stage == "sft" else "corpus.jsonl")
    write_rows(args, tokenizer, work / "kept.parquet", count)
    if args.stage == "cpt":
        from ftllm.io import read_records

        texts = [row["problem"] + row["reasoning"] + row["solution"] for row in read_records(work / "kept.parquet")]
        with open(data, "w", encoding="utf-8") as out:
            out.writelines(json.dumps({"text": text}) + "\n" for text in texts)
        # documents stay apart in a block (separate_documents): a token attends within its own document
        lengths = [len(tokenizer(text)["input_ids"]) + 1 for text in texts]
    else:
        lengths = row_lengths(run_config(args, stage_section, 1, "small"), tokenizer, data)
    inputs = {"models": models, "data": str(data), "lengths": lengths}
    record.write_text(json.dumps({"settings": settings, "inputs": inputs}), encoding="utf-8")
    return inputs


def max_tokens_per_micro_batch(args, section) -> int:
    over = stage_overrides(args, section, 1, "big")
    if args.stage == "cpt":
        return over["block_size"] * section.per_device_batch_size
    return over.get("max_length", section.max_length) * section.per_device_batch_size


def stage_overrides(args, section, processes: int, model: str) -> dict:
    """The benchmark's changes to the params section (recorded in the result)."""
    steps = args.warmup + args.steps
    common = dict(max_steps=steps, save_steps=10**6, num_processes=processes, seed=args.seed)
    if args.tiny:
        common |= dict(dtype="float32", bf16=False, attn_implementation="sdpa", use_liger_kernel=False)
    if model == "small":  # fits one card: recomputation would only lower the one-GPU baseline's throughput
        common["gradient_checkpointing"] = False
    if args.stage == "sft":
        common |= dict(global_batch_size=section.per_device_batch_size * processes, keep_checkpoints=False,
                       eos_token="<|im_end|>", max_rows=None)  # fmt: skip
        if args.tiny:
            common["max_length"] = 256
        return common
    common |= dict(gradient_accumulation_steps=1, token_budget=None, dataset=None, corpus=[],
                   block_size=256 if args.tiny else min(section.sequence_length, 16384))  # fmt: skip
    if args.tiny:
        common |= dict(context_length=256, lora_r=8, lora_alpha=8.0)
    return common


def run_config(args, section, processes: int, model: str):
    return dataclasses.replace(section, **stage_overrides(args, section, processes, model))


def plan(args, section) -> list[dict]:
    """(name, model, processes, accelerate config) of each requested run."""
    multi = args.accelerate_config or (section.accelerate_config if not args.tiny or gpu_count() else
                                       str(ROOT / "conf" / "accelerate" / "cpu.yaml"))  # fmt: skip
    if not Path(multi).exists() and (ROOT / multi).exists():  # params name it relative to the repository
        multi = str(ROOT / multi)
    table = {
        "fsdp2": ("big", args.gpus, multi),
        "fsdp2_keep": ("big", args.gpus, multi),
        "zero3": ("big", args.gpus, args.zero3_config),
        "small_1": ("small", 1, multi),  # one process: never relaunched, the config is not read
        "small_n": ("small", args.gpus, multi),
    }
    wanted = [r for r in args.runs.split(",") if r]
    return [{"name": n, "model": table[n][0], "processes": table[n][1], "accelerate_config": str(table[n][2])}
            for n in RUNS if n in wanted]  # fmt: skip


def launch_run(args, run: dict, inputs: dict, work: Path) -> dict:
    """One run in a fresh process (which relaunches itself under accelerate); its per-rank reports."""
    folder = work / run["name"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    spec = {**run, "stage": args.stage, "params": args.params, "tiny": args.tiny, "warmup": args.warmup,
            "steps": args.steps, "seed": args.seed, "min_len": args.min_len, "max_len": args.max_len,
            "model_dir": inputs["models"][run["model"]]["dir"], "data": inputs["data"], "folder": str(folder),
            "small_layers": args.small_layers, "shape": args.shape}  # fmt: skip
    (folder / "spec.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "FTLLM_LAUNCHED", "RANK", "WORLD_SIZE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks"), env.get("PYTHONPATH", "")])
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", str(folder / "spec.json")], env=env,
                              capture_output=True, text=True, timeout=args.timeout)  # fmt: skip
        code, tail = proc.returncode, (proc.stdout + proc.stderr)[-3000:]
    except subprocess.TimeoutExpired as err:
        code, tail = "timeout", str(err)[-3000:]
    (folder / "log.txt").write_text(tail, encoding="utf-8")
    for saved in ("out", "ck"):  # the trained model (22 GB at 48 layers) is not what this measures: free the disk
        shutil.rmtree(folder / saved, ignore_errors=True)
    ranks = sorted(folder.glob("rank*.json"))
    reports = [json.loads(p.read_text()) for p in ranks]
    wall = round(time.perf_counter() - started, 1)
    if code != 0 or len(reports) != run["processes"]:
        return {"error": f"exit {code}, {len(reports)}/{run['processes']} rank reports; log tail: {tail[-1500:]}",
                "wall_s": wall}  # fmt: skip
    return summarize_run(reports, run, inputs, args) | {"wall_s": wall}


def summarize_run(reports: list[dict], run: dict, inputs: dict, args) -> dict:
    from sft_mfu import flops_per_token

    lead = next(r for r in reports if r["rank"] == 0)
    model = inputs["models"][run["model"]]
    shape = argparse.Namespace(layers=model["layers"], hidden=args.shape["hidden"])
    fpt = flops_per_token(shape, model["params_no_embedding"], inputs["lengths"])
    if args.stage == "cpt":  # frozen base: forward + input gradients only
        fpt -= 2 * model["params_no_embedding"]
    per_gpu = lead["tokens_per_s"] / run["processes"]
    peak = sum(r["peak_tflops"] for r in reports) / len(reports)
    memory = [r["peak_memory_gb"] for r in sorted(reports, key=lambda r: r["rank"])]
    return {
        "model": run["model"],
        "layers": model["layers"],
        "gpus": run["processes"],
        "accelerate_config": run["accelerate_config"] if run["processes"] > 1 else None,
        "distributed_type": lead["distributed_type"],
        "tokens_per_s": round(lead["tokens_per_s"], 1),
        "tokens_per_s_per_gpu": round(per_gpu, 1),
        "tflops_per_gpu": round(per_gpu * fpt / 1e12, 2),
        "mfu": round(per_gpu * fpt / 1e12 / peak, 4),
        "peak_tflops": round(peak, 2),
        "peak_memory_gb_per_gpu": memory,
        "peak_memory_gb_max": max(memory) if None not in memory else None,
        "step_s": round(lead["step_s"], 3),
        "timed_steps": lead["timed_steps"],
        "timed_tokens": lead["timed_tokens"],
        "flops_per_token": fpt,
        "gradient_checkpointing": lead["gradient_checkpointing"],
        "fsdp": lead["fsdp"] if lead["distributed_type"].endswith("FSDP") else None,
        "settings": lead["overrides"],
    }


def card_slug() -> str:
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    words = [w for w in torch.cuda.get_device_name(0).replace("-", " ").split()
             if w.lower() not in ("nvidia", "tesla", "geforce", "rtx")]  # fmt: skip
    return (words[0] if words else "gpu").lower()


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]
    if args.worker:
        return worker(Path(args.worker))
    from ftllm.config import load_stage
    from ftllm.provenance import provenance

    gpus = gpu_count()
    if args.gpus is None:
        args.gpus = gpus or 2
    if gpus and args.gpus > gpus:
        raise SystemExit(f"sft_fsdp.py: --gpus {args.gpus} but {gpus} GPUs are visible")
    if args.gpus < 2:
        raise SystemExit("sft_fsdp.py: --gpus must be >= 2 (the point is several processes)")
    section = load_stage(args.params, args.stage)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    card = card_slug()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="sft_fsdp_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"writing models ({args.shape['layers']} and {args.small_layers} layers) and data to {work}", flush=True)
        inputs = write_inputs(args, work, section)
        # runs of earlier calls with this --workdir count too: one call per run fits a 10-minute command limit
        results = {p.parent.name: json.loads(p.read_text()) for p in sorted(work.glob(f"*/result-{args.stage}.json"))
                   if p.parent.name in RUNS}  # fmt: skip
        for run in plan(args, section):
            print(f"--- {run['name']}: {run['model']} model, {run['processes']} processes", flush=True)
            try:
                results[run["name"]] = launch_run(args, run, inputs, work)
            except Exception as err:  # noqa: BLE001 - one failing run must not hide the others
                traceback.print_exc()
                results[run["name"]] = {"error": f"{type(err).__name__}: {err}"[:800]}
            results[run["name"]]["command"] = provenance(None if argv is None else [__file__, *argv])["command"]
            (work / run["name"] / f"result-{args.stage}.json").write_text(json.dumps(results[run["name"]]))
            print(json.dumps({k: results[run["name"]].get(k) for k in ("tokens_per_s_per_gpu", "mfu",
                              "peak_memory_gb_max", "error")}), flush=True)  # fmt: skip
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    info = provenance(None if argv is None else [__file__, *argv])
    fsdp, zero3 = results.get("fsdp2", {}), results.get("zero3", {})
    one, many = results.get("small_1", {}), results.get("small_n", {})
    efficiency = None
    if one.get("tokens_per_s") and many.get("tokens_per_s_per_gpu"):
        efficiency = round(many["tokens_per_s_per_gpu"] / one["tokens_per_s"], 4)
    report = {
        "stage": args.stage,
        "gpus": args.gpus,
        "card": card,
        "device": info["device"],
        "date": info["date"],
        "command": info["command"],
        "commit": info["code"],
        "mfu": fsdp.get("mfu"),
        "tokens_per_s_per_gpu": fsdp.get("tokens_per_s_per_gpu"),
        "peak_memory_gb_per_gpu": fsdp.get("peak_memory_gb_per_gpu"),
        "scaling_efficiency": efficiency,
        "scaling_shape": f"{args.small_layers} layers of the big model's shape "
                         f"(hidden {args.shape['hidden']}, FFN {args.shape['ffn']}), no recomputation, "
                         f"1 vs {args.gpus} processes",
        "keep_vs_reshard_tokens_per_s": ratio(results.get("fsdp2_keep", {}), fsdp),
        "zero3_vs_fsdp2_tokens_per_s": (round(zero3["tokens_per_s"] / fsdp["tokens_per_s"], 4)
                                        if zero3.get("tokens_per_s") and fsdp.get("tokens_per_s") else None),
        "sharded": bool(gpu_count()),  # on CPU the multi-process runs are data parallel over gloo
        "params": str(args.params),
        "shape": args.shape,
        "small_layers": args.small_layers,
        "data": {"min_len": args.min_len, "max_len": args.max_len, "token_weighted_mean_len":
                 round(sum(s * s for s in inputs["lengths"]) / sum(inputs["lengths"]), 1)},
        "runs": results,
        "versions": versions(),
        "loadavg": info["loadavg"],
    }  # fmt: skip
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"{args.stage}_fsdp_{args.gpus}x{card}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("mfu", "tokens_per_s_per_gpu", "scaling_efficiency",
                                             "zero3_vs_fsdp2_tokens_per_s", "gpus", "card")}))  # fmt: skip
    return 0 if report["mfu"] is not None or report["scaling_efficiency"] is not None else 1


def ratio(run: dict, base: dict) -> float | None:
    """tokens/s of `run` over `base`'s, when both ran."""
    if run.get("tokens_per_s") and base.get("tokens_per_s"):
        return round(run["tokens_per_s"] / base["tokens_per_s"], 4)
    return None


def versions() -> dict:
    import importlib.metadata as md

    found = {}
    for package in ("torch", "transformers", "trl", "accelerate", "peft", "deepspeed", "liger-kernel"):
        try:
            found[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return found


# ---------------------------------------------------------------------------
# The worker: the stage's own launch and training function, timed per rank


def worker(spec_path: Path) -> int:
    import logging

    from ftllm.train.launch import relaunch_if_needed

    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if spec["processes"] > 1 and "DEEPSPEED" in Path(spec["accelerate_config"]).read_text(encoding="utf-8"):
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise SystemExit(f"{spec['accelerate_config']}: needs deepspeed, which is not installed")
    from ftllm.config import load_stage

    args = argparse.Namespace(**{k: spec[k] for k in ("warmup", "steps", "seed", "tiny", "stage")})
    section = load_stage(spec["params"], spec["stage"])
    config = run_config(args, section, spec["processes"], spec["model"])
    config = dataclasses.replace(config, accelerate_config=spec["accelerate_config"])
    if spec["name"] == "fsdp2_keep":
        config = dataclasses.replace(config, fsdp=dataclasses.replace(config.fsdp, reshard_after_forward=False))
    # what stages/sft.py does first: with several processes wanted, run again under accelerate (the section's
    # fsdp settings written over an FSDP config) and wait
    code = relaunch_if_needed(config.num_processes, config.accelerate_config, fsdp=config.fsdp,
                              model_dir=spec["model_dir"])  # fmt: skip
    if code is not None:
        return code

    import torch
    from sft_mfu import measure_peak_tflops

    rank = int(os.environ.get("RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    device = "cuda" if cuda else "cpu"
    peak = measure_peak_tflops(device, torch.bfloat16 if cuda else torch.float32)
    timer = step_timer(spec["warmup"], spec["steps"], cuda)
    folder = Path(spec["folder"])
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if spec["stage"] == "sft":
        from ftllm.train.sft import train_sft

        metrics = train_sft(config, spec["model_dir"], spec["data"], folder / "out", folder / "ck", callbacks=(timer,))
        fallback_tokens = None
    else:
        from ftllm.train.cpt import train_cpt
        from ftllm.train.launch import world_size

        metrics = train_cpt(config, spec["model_dir"], folder / "out", folder / "ck", corpus=[Path(spec["data"])],
                            callbacks=(timer,))  # fmt: skip
        fallback_tokens = config.per_device_batch_size * world_size() * config.sequence_length
    (t0, tok0), (t1, tok1) = timer.marks[spec["warmup"]], timer.marks[spec["warmup"] + spec["steps"]]
    tokens = tok1 - tok0 if tok1 > tok0 else fallback_tokens * spec["steps"]
    from accelerate import PartialState

    report = {
        "rank": rank,
        "distributed_type": str(PartialState().distributed_type),
        "tokens_per_s": tokens / (t1 - t0),
        "timed_tokens": int(tokens),
        "timed_steps": spec["steps"],
        "step_s": (t1 - t0) / spec["steps"],
        "peak_tflops": peak,
        "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "gradient_checkpointing": metrics.get("gradient_checkpointing"),
        "overrides": {k: v for k, v in stage_overrides(args, section, spec["processes"], spec["model"]).items()
                      if k not in ("dataset", "corpus")},
        "fsdp": dataclasses.asdict(config.fsdp),
    }  # fmt: skip
    (folder / f"rank{rank}.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    from ftllm.train.launch import leave_process_group

    leave_process_group()
    return 0


def step_timer(warmup: int, steps: int, cuda: bool):
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        """Wall time and tokens seen (all ranks) at the end of warmup and at the last timed step."""

        def __init__(self):
            self.marks = {}

        def on_step_end(self, targs, state, control, **kwargs):
            if state.global_step in (warmup, warmup + steps):
                if cuda:
                    import torch

                    torch.cuda.synchronize()
                self.marks[state.global_step] = (time.perf_counter(), state.num_input_tokens_seen)

    return Timer()


if __name__ == "__main__":
    sys.exit(main())
