"""MFU of the sft stage itself: `ftllm.train.sft.train_sft` with the full profile's `sft` section, on one GPU.

`benchmarks/sft_mfu.py` measured TRL configurations in isolation; this one runs the stage's own training
function, so the figure is what `dvc repro` gets. A model of the given shape (default Llama-3.2-1B's:
hidden 2048, 16 layers, 32/8 heads, FFN 8192, vocab 128256) with random weights is written to a
temporary folder with ftllm's small test tokenizer, and judged rows of random text with row lengths
drawn between --min-len and --max-len tokens are written beside it. Two runs, same data, same function:

- stage       the params file's `sft` section as it is (packing, flex attention, liger, checkpointing auto)
- trl_default the same section with TRL's defaults for the fast-path keys: no packing (rows padded per
              micro-batch of 2), sdpa, gradient checkpointing on, no liger

Overridden in both, and recorded in the result: max_steps (warmup + timed steps), global_batch_size =
per_device_batch_size (one micro-batch per optimizer step: accumulation does not change MFU, and keeps the
run short), eos_token (the test tokenizer's), saving off. MFU counts real tokens only, against the bf16
matmul peak measured in the same run (as sft_mfu.py):

    FLOPs/token = 6 * N + 12 * layers * hidden * s   (N = parameters without the input embedding,
                                                      s = token-weighted mean row length)

    python benchmarks/sft_stage_mfu.py                    # one GPU -> benchmarks/results/sft_stage_mfu.json
    python benchmarks/sft_stage_mfu.py --tiny --out /tmp/sft_stage_mfu.json   # CPU smoke test (sdpa)
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE_1B = dict(hidden=2048, layers=16, heads=32, kv_heads=8, ffn=8192, vocab=128256)
SHAPE_TINY = dict(hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, vocab=512)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default=str(ROOT / "params.yaml"), help="params file whose `sft` section is run")
    p.add_argument("--tiny", action="store_true", help="tiny shape, short rows, sdpa: a CPU smoke test")
    for key, value in SHAPE_1B.items():
        p.add_argument(f"--{key}", type=int, default=None, help=f"model shape (default {value})")
    p.add_argument("--min-len", type=int, default=None, help="shortest row in tokens (default 256)")
    p.add_argument("--max-len", type=int, default=None, help="longest row in tokens (default 4096)")
    p.add_argument("--steps", type=int, default=None, help="timed optimizer steps per run (default 20)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3)")
    p.add_argument("--runs", default="stage,trl_default", help="comma-separated runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sft_stage_mfu.json"))
    args = p.parse_args(argv)
    for key, value in (SHAPE_TINY if args.tiny else SHAPE_1B).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    defaults = dict(min_len=(16, 256), max_len=(96, 4096), steps=(2, 20), warmup=(1, 3))
    for key, (tiny, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else full)
    return args


def write_model(args, folder: Path) -> tuple[Path, int]:
    """A random-weight Llama of the requested shape with the test tokenizer; returns (folder, N without embedding)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ftllm.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, intermediate_size=args.ffn, vocab_size=max(args.vocab, len(tokenizer)),
        max_position_embeddings=32768, tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, params


def write_rows(args, tokenizer, path: Path, count: int) -> None:
    """Judged rows whose rendered length is about a random target in [min_len, max_len] tokens."""
    from ftllm.io import write_records

    rng = random.Random(args.seed)
    special = set(tokenizer.all_special_ids)
    pool = [i for i in range(len(tokenizer)) if i not in special]

    def text(n: int) -> str:
        return tokenizer.decode([rng.choice(pool) for _ in range(max(1, n))])

    rows = []
    for i in range(count):
        n = rng.randint(args.min_len, args.max_len)
        rows.append({"id": f"r{i}", "problem": text(n // 8), "reasoning": text(n // 2), "solution": text(n // 3),
                     "answer": str(i)})  # fmt: skip
    write_records(path, rows)


def row_lengths(config, tokenizer, data: Path) -> list[int]:
    """Tokens of each rendered row (prompt + completion), as the trainer sees them."""
    from ftllm.train.sft import load_examples

    return [len(tokenizer.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=True, return_dict=False))
            for ex in load_examples(data, config)]


def run_settings(name: str, section, args, steps: int):
    """The stage's section for run `name`, with the benchmark's overrides."""
    common = dict(max_steps=steps, global_batch_size=section.per_device_batch_size, save_steps=10**6,
                  keep_checkpoints=False, eos_token="<|im_end|>", num_processes=1, max_rows=None)  # fmt: skip
    if args.tiny:
        common |= dict(dtype="float32", bf16=False, max_length=256, attn_implementation="sdpa")
    if name == "stage":
        return dataclasses.replace(section, **common)
    if name == "trl_default":
        trl = dict(per_device_batch_size=2, global_batch_size=2, packing=False, attn_implementation="sdpa",
                   gradient_checkpointing=True, use_liger_kernel=False)  # fmt: skip
        return dataclasses.replace(section, **(common | trl))
    raise ValueError(f"unknown run {name!r}: stage | trl_default")


def make_timer(warmup: int, steps: int, device: str):
    from transformers import TrainerCallback

    def sync():
        import torch

        if device == "cuda":
            torch.cuda.synchronize()

    class Timer(TrainerCallback):
        """Wall time and real tokens between the end of warmup and the last step."""

        def __init__(self):
            self.marks = {}

        def on_step_end(self, targs, state, control, **kwargs):
            if state.global_step in (warmup, warmup + steps):
                sync()
                self.marks[state.global_step] = (time.perf_counter(), state.num_input_tokens_seen)

    return Timer()


def run_one(name, section, args, model_dir, data, work, fpt, peak, device):
    import torch

    from ftllm.train.sft import train_sft

    config = run_settings(name, section, args, args.warmup + args.steps)
    timer = make_timer(args.warmup, args.steps, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    metrics = train_sft(config, model_dir, data, work / f"out-{name}", work / f"ck-{name}", callbacks=(timer,))
    (t0, tok0), (t1, tok1) = timer.marks[args.warmup], timer.marks[args.warmup + args.steps]
    tokens_per_s = (tok1 - tok0) / (t1 - t0)
    return {
        "tokens_per_s": round(tokens_per_s, 1),
        "tflops": round(tokens_per_s * fpt / 1e12, 2),
        "mfu": round(tokens_per_s * fpt / 1e12 / peak, 4),
        "timed_steps": args.steps,
        "timed_tokens": int(tok1 - tok0),
        "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
        "settings": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("prompt",)},
        "gradient_checkpointing_resolved": metrics["gradient_checkpointing"],
    }


def main(argv=None) -> int:
    import torch
    from transformers import AutoTokenizer

    sys.path.insert(0, str(ROOT / "src"))  # ftllm without `pip install -e .`
    from sft_mfu import flops_per_token, measure_peak_tflops  # the same peak and FLOPs model as sft_mfu.py

    from ftllm.config import load_stage
    from ftllm.provenance import provenance

    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    section = load_stage(args.params, "sft")
    peak = measure_peak_tflops(device, dtype)
    print(f"peak matmul: {peak:.1f} TFLOP/s ({dtype}) on {device}", flush=True)

    with tempfile.TemporaryDirectory(prefix="sft_stage_mfu_") as tmp:
        work = Path(tmp)
        model_dir, params_no_embed = write_model(args, work / "model")
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        stage = run_settings("stage", section, args, 1)
        tokens_per_step = max(stage.per_device_batch_size * stage.max_length, 2 * args.max_len)
        count = int(2.2 * (args.warmup + args.steps) * tokens_per_step / ((args.min_len + args.max_len) / 2)) + 16
        data = work / "kept.parquet"
        write_rows(args, tokenizer, data, count)
        lengths = row_lengths(stage, tokenizer, data)
        shape = argparse.Namespace(layers=args.layers, hidden=args.hidden)
        fpt = flops_per_token(shape, params_no_embed, lengths)

        results = {}
        for name in [n.strip() for n in args.runs.split(",") if n.strip()]:
            print(f"--- {name}", flush=True)
            try:
                results[name] = run_one(name, section, args, model_dir, data, work, fpt, peak, device)
                print(f"{name}: {results[name]['tokens_per_s']} tok/s, MFU {results[name]['mfu']:.3f}", flush=True)
            except Exception as err:  # noqa: BLE001 - one failing run must not hide the other
                traceback.print_exc()
                results[name] = {"error": f"{type(err).__name__}: {err}"[:500]}
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()

    info = provenance(None if argv is None else [__file__, *argv])
    stage_result, baseline = results.get("stage", {}), results.get("trl_default", {})
    report = {
        "mfu": stage_result.get("mfu"),
        "baseline_mfu": baseline.get("mfu"),
        "tokens_per_s": stage_result.get("tokens_per_s"),
        "baseline_tokens_per_s": baseline.get("tokens_per_s"),
        "card": info["device"],
        "date": info["date"],
        "command": info["command"],
        "commit": info["code"],
        "params": str(args.params),
        "peak_tflops": round(peak, 3),
        "versions": _versions(torch),
        "model": {k: getattr(args, k) for k in SHAPE_1B} | {"params_no_embedding": params_no_embed},
        "data": {"rows": len(lengths), "min_len": args.min_len, "max_len": args.max_len,
                 "token_weighted_mean_len": round(sum(s * s for s in lengths) / sum(lengths), 1)},  # fmt: skip
        "flops_per_token": fpt,
        "runs": results,
        "loadavg": info["loadavg"],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("mfu", "baseline_mfu", "tokens_per_s", "baseline_tokens_per_s", "card")}))
    return 0 if report["mfu"] is not None else 1


def _versions(torch) -> dict:
    import importlib.metadata as md

    found = {"torch": torch.__version__}
    for package in ("transformers", "trl", "accelerate", "datasets", "liger-kernel"):
        try:
            found[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return found


if __name__ == "__main__":
    sys.exit(main())
