"""Time the OpT-DeUS upscale end to end (load, fuse, save) on a random model of a given shape.

The default shape is llm-jp-4-8B's (32 layers, hidden 4096, FFN 14336, 32/8 heads, vocab ~100k)
grown to 48 layers, fusing on the GPU when there is one. A random checkpoint of that shape is
written first (not timed); then `ftllm.upscale.upscale` runs exactly as the stage does, and
`benchmarks/results/upscale_time.json` gets the total and per-phase seconds.

    python benchmarks/upscale_time.py                       # 8B shape, on an H100
    python benchmarks/upscale_time.py --layers 4 --target 6 --hidden 256 --ffn 512 --heads 4 \
        --kv-heads 2 --vocab 1024 --out /tmp/upscale_time_cpu.json   # CPU smoke run

Random weights make near-uniform OT plans that Sinkhorn settles in few iterations; trained
weights can need more, so the figure is a lower bound on the Sinkhorn share.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "upscale_time.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # shape (defaults: llm-jp-4-8B)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--target", type=int, default=48, help="layers after up-scaling")
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--ffn", type=int, default=14336)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=99584)
    # what runs
    parser.add_argument("--fusion", choices=["ot", "average"], default="ot")
    parser.add_argument("--no-rescale", action="store_true", help="reference-compatible Tᵀ·W alignment")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/upscale_bench"),
                        help="scratch folder for the random and the grown checkpoint (needs ~2.5x the model size)")
    parser.add_argument("--drop-caches", action="store_true",
                        help="drop the OS page cache before timing, so loading reads from disk (needs root)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON result goes")
    return parser.parse_args(argv)


def write_random_model(args, folder: Path) -> int:
    """A random Llama checkpoint of the requested shape (+ a small tokenizer); returns its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ftllm.tiny import build_tokenizer
    from ftllm.upscale import resolve_device

    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.ffn, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, max_position_embeddings=4096,
        rope_theta=500000.0, tie_word_embeddings=False,
    )  # fmt: skip
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    # initialise straight on the device in the target dtype: no fp32 copy of an 8B model on the host
    with resolve_device(args.device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
    model.save_pretrained(folder, safe_serialization=True)
    build_tokenizer().save_pretrained(folder)  # the stage loads a tokenizer; its size does not matter here
    count = model.num_parameters()
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return count


def drop_page_cache() -> bool:
    import os

    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def main(argv=None) -> dict:
    import torch

    from ftllm.config import build
    from ftllm.upscale import UpscaleConfig, resolve_device, upscale

    args = parse_args(argv)
    base, grown = args.workdir / "base", args.workdir / "upscaled"
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    started = time.perf_counter()
    parameters = write_random_model(args, base)
    print(f"random {args.layers}-layer model ({parameters / 1e9:.2f}B) "
          f"written in {time.perf_counter() - started:.1f} s")
    cold = args.drop_caches and drop_page_cache()

    config = build(UpscaleConfig, {"target_layers": args.target, "fusion": args.fusion,
                                   "ot_rescale": not args.no_rescale, "dtype": args.dtype, "device": args.device})
    metrics = upscale(config, base, grown)
    device = resolve_device(args.device)
    result = {
        "seconds": metrics["seconds"],
        "load_s": metrics["load_s"],
        "fuse_s": metrics["fuse_s"],
        "save_s": metrics["save_s"],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else list(argv))),
        "shape": {"layers": args.layers, "target_layers": args.target, "hidden": args.hidden, "ffn": args.ffn,
                  "heads": args.heads, "kv_heads": args.kv_heads, "vocab": args.vocab, "dtype": args.dtype},
        "parameters_before": metrics["parameters_before"],
        "parameters_after": metrics["parameters_after"],
        "fusion": args.fusion,
        "ot_rescale": not args.no_rescale,
        "ot_plan_peak_mean": metrics["ot_plan_peak_mean"],
        "page_cache": "dropped" if cold else "warm (checkpoint just written)",
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(args.workdir, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
