"""SFT throughput and model FLOPs utilisation (MFU) on one GPU: TRL defaults vs our padding-free setup.

A Llama-3.2-1B-shaped model (hidden 2048, 16 layers, 32/8 heads, FFN 8192, vocab 128256) with random
weights trains on random token sequences of random length (256-4096) under several TRL SFTTrainer
configurations. MFU is measured against the bf16 matmul peak measured in the same run (a loop of big
torch.matmul), not a datasheet number:

    FLOPs/token = 6 * N + 12 * layers * hidden * s      (N = parameters without the input embedding,
                                                         s = token-weighted mean sequence length)
    MFU         = tokens/s * FLOPs/token / peak

Only real tokens count: padding is work the baseline wastes. Configurations:

- baseline   TRL SFTTrainer defaults: padded micro-batches of 2, gradient checkpointing on, sdpa.
- ours       packing (bfd, padding-free: position_ids mark the documents, transformers builds a
             block-diagonal mask), one 16k-token pack per micro-batch, no checkpointing, liger if importable.
- ours_flex  as ours with attn_implementation=flex_attention (block-sparse document mask).
- ours_compile (with --compile) as ours plus torch.compile (packs padded to one static shape).

`mfu` in the result is the best non-baseline configuration. One failing configuration prints its error
and the others still run. Needs trl and datasets besides torch/transformers (carry them as wheels on a
bare GPU box).

    python benchmarks/sft_mfu.py                              # GPU, full shape -> benchmarks/results/sft_mfu.json
    python benchmarks/sft_mfu.py --device cpu --tiny --out /tmp/sft_mfu.json   # CPU smoke test
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import random
import sys
import time
import traceback
from pathlib import Path

SHAPE_1B = dict(hidden=2048, layers=16, heads=32, kv_heads=8, ffn=8192, vocab=128256)
SHAPE_TINY = dict(hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, vocab=512)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cuda | cpu")
    p.add_argument("--tiny", action="store_true", help="tiny shapes and lengths for a CPU smoke test")
    for key, value in SHAPE_1B.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help=f"model shape (default {value})")
    p.add_argument("--min-len", type=int, default=None, help="shortest sequence (default 256)")
    p.add_argument("--max-len", type=int, default=None, help="longest sequence (default 4096)")
    p.add_argument("--pack-len", type=int, default=None, help="tokens per packed micro-batch in ours (default 16384)")
    p.add_argument("--baseline-batch", type=int, default=2, help="padded sequences per micro-batch in baseline")
    p.add_argument("--steps", type=int, default=None, help="timed optimizer steps per configuration (default 20)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; compile happens here)")
    p.add_argument("--configs", default="baseline,ours,ours_flex", help="comma-separated configurations to run")
    p.add_argument("--compile", action="store_true", help="also run ours_compile (torch.compile)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/sft_mfu.json")
    args = p.parse_args(argv)
    shape = SHAPE_TINY if args.tiny else SHAPE_1B
    for key, value in shape.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    defaults = dict(min_len=(16, 256), max_len=(64, 4096), pack_len=(256, 16384), steps=(3, 20), warmup=(1, 3))
    for key, (tiny, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else full)
    return args


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def measure_peak_tflops(device: str, dtype) -> float:
    """Dense matmul throughput of this device in TFLOP/s: the MFU denominator."""
    import torch

    n = 8192 if device == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 50 if device == "cuda" else 5
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def random_lengths(args, count: int) -> list[int]:
    rng = random.Random(args.seed)
    return [rng.randint(args.min_len, args.max_len) for _ in range(count)]


def flops_per_token(args, params_no_embed: int, lengths: list[int]) -> float:
    mean_context = sum(s * s for s in lengths) / sum(lengths)  # token-weighted: a token of a long doc costs more
    return 6 * params_no_embed + 12 * args.layers * args.hidden * mean_context


def build_model(args, device: str, attn: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, intermediate_size=args.ffn, vocab_size=args.vocab,
        max_position_embeddings=max(args.max_len, args.pack_len), tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=3, attn_implementation=attn,
    )  # fmt: skip
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    return model


def config_settings(name: str, args, use_liger: bool) -> dict:
    """TRL settings of each configuration (beyond the shared ones)."""
    baseline = dict(attn="sdpa", per_device_train_batch_size=args.baseline_batch, max_length=args.max_len,
                    gradient_checkpointing=True, packing=False)  # fmt: skip
    ours = dict(attn="sdpa", per_device_train_batch_size=1, max_length=args.pack_len, packing=True,
                packing_strategy="bfd", padding_free=True, gradient_checkpointing=False,
                use_liger_kernel=use_liger)  # fmt: skip
    table = {
        "baseline": baseline,
        "ours": ours,
        "ours_flex": {**ours, "attn": "flex_attention"},
        # every pack padded to pack_len: one static shape, so torch.compile traces once instead of per step
        "ours_compile": {**ours, "torch_compile": True, "pad_to_multiple_of": args.pack_len},
    }
    if name not in table:
        raise ValueError(f"unknown configuration {name!r}; choose from {', '.join(table)}")
    return table[name]


def make_timer(args, device: str):
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        """Wall time and real tokens between the end of warmup and the last step."""

        def __init__(self):
            self.marks = {}

        def on_step_end(self, targs, state, control, **kwargs):
            if state.global_step in (args.warmup, args.warmup + args.steps):
                sync(device)
                self.marks[state.global_step] = (time.perf_counter(), state.num_input_tokens_seen)

    return Timer()


def run_config(name: str, args, device: str, dtype, tokenizer, dataset, fpt: float, peak: float, use_liger: bool):
    import torch
    from trl import SFTConfig, SFTTrainer

    settings = config_settings(name, args, use_liger)
    attn = settings.pop("attn")
    model = build_model(args, device, attn, dtype)
    targs = SFTConfig(
        output_dir=f"/tmp/sft_mfu_{name}", max_steps=args.warmup + args.steps, learning_rate=1e-5,
        bf16=dtype == torch.bfloat16, logging_steps=10**6, save_strategy="no", report_to="none",
        include_num_input_tokens_seen="non_padding", use_cpu=device == "cpu", seed=args.seed,
        dataloader_num_workers=0, **settings,
    )  # fmt: skip
    timer = make_timer(args, device)
    trainer = SFTTrainer(model=model, args=targs, train_dataset=dataset, processing_class=tokenizer, callbacks=[timer])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    (t0, tok0), (t1, tok1) = timer.marks[args.warmup], timer.marks[args.warmup + args.steps]
    tokens_per_s = (tok1 - tok0) / (t1 - t0)
    result = {
        "attn_implementation": attn,
        **settings,
        "tokens_per_s": round(tokens_per_s, 1),
        "tflops": round(tokens_per_s * fpt / 1e12, 2),
        "mfu": round(tokens_per_s * fpt / 1e12 / peak, 4),
        "timed_steps": args.steps,
        "timed_tokens": tok1 - tok0,
        "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
    }
    del trainer, model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv=None) -> int:
    import importlib.util

    import torch
    from datasets import Dataset

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # ftllm without `pip install -e .`
    from ftllm.tiny import build_tokenizer

    args = parse_args(argv)
    device = pick_device(args.device)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    peak = measure_peak_tflops(device, dtype)
    print(f"peak matmul: {peak:.1f} TFLOP/s ({dtype}) on {device}", flush=True)

    tokenizer = build_tokenizer()  # only its pad token matters: the data is already token ids
    per_pack = max(1, args.pack_len // ((args.min_len + args.max_len) // 2))
    rows = 2 * (args.warmup + args.steps) * max(args.baseline_batch, per_pack) + 16
    lengths = random_lengths(args, rows)
    rng = random.Random(args.seed + 1)
    dataset = Dataset.from_dict({"input_ids": [[rng.randrange(16, args.vocab) for _ in range(n)] for n in lengths]})
    probe = build_model(args, "meta", "sdpa", dtype)
    params_no_embed = sum(p.numel() for p in probe.parameters()) - probe.get_input_embeddings().weight.numel()
    fpt = flops_per_token(args, params_no_embed, lengths)
    use_liger = importlib.util.find_spec("liger_kernel") is not None

    names = [n.strip() for n in args.configs.split(",") if n.strip()] + (["ours_compile"] if args.compile else [])
    results = {}
    for name in names:
        print(f"--- {name}", flush=True)
        try:
            results[name] = run_config(name, args, device, dtype, tokenizer, dataset, fpt, peak, use_liger)
            print(f"{name}: {results[name]['tokens_per_s']} tok/s, MFU {results[name]['mfu']:.3f}", flush=True)
        except Exception as err:  # noqa: BLE001 - one broken configuration must not hide the others
            traceback.print_exc()
            results[name] = {"error": f"{type(err).__name__}: {err}"[:500]}
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()

    ours = {k: v for k, v in results.items() if k != "baseline" and "mfu" in v}
    best = max(ours, key=lambda k: ours[k]["mfu"]) if ours else None
    report = {
        "mfu": ours[best]["mfu"] if best else None,
        "baseline_mfu": results.get("baseline", {}).get("mfu"),
        "peak_tflops": round(peak, 3),
        "tokens_per_s": ours[best]["tokens_per_s"] if best else None,
        "baseline_tokens_per_s": results.get("baseline", {}).get("tokens_per_s"),
        "best_config": best,
        "card": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "versions": {"torch": torch.__version__, **_versions()},
        "model": {k: getattr(args, k) for k in SHAPE_1B} | {"params_no_embedding": params_no_embed},
        "data": {"min_len": args.min_len, "max_len": args.max_len, "rows": rows,
                 "token_weighted_mean_len": round(sum(s * s for s in lengths) / sum(lengths), 1)},  # fmt: skip
        "flops_per_token": fpt,
        "configs": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("mfu", "baseline_mfu", "peak_tflops", "tokens_per_s", "best_config")}))
    return 0 if best or results.get("baseline", {}).get("mfu") else 1


def _versions() -> dict:
    import importlib.metadata as md

    found = {}
    for package in ("transformers", "trl", "accelerate", "liger-kernel"):
        try:
            found[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return found


if __name__ == "__main__":
    sys.exit(main())
