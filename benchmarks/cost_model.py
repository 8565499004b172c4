"""Cost model: GPU-hours per stage of the full profile on H100/H200-class cards, from measured throughputs.

Reads the full-scale sizes from the full profile (conf/ composed as `make params` does, or --params FILE:
generation grid, judge agreement k, SFT epochs, RL steps and group size, predict N) and the measured
throughputs in benchmarks/results/*.json, scales each measurement from
the model it was taken on to the model the stage runs (8B base for CPT, 12B after upscaling to 48 layers for
SFT/RL/predict, gpt-oss-20b for generate/judge), and writes `stages.<name>.gpu_hours` with every assumption
beside its number.

    python benchmarks/cost_model.py                       # benchmarks/results/cost_model.json
    python benchmarks/cost_model.py --submission-gpu H100 --problems 100 --limit-min 500

Scaling rules:
- decode (sampling): one decode step reads the weights once (shared by the running batch) plus every running
  sequence's KV cache, at an assumed share of the card's bandwidth (`hbm_efficiency`), and pays a fixed host
  cost per running sequence (scheduling, sampling, detokenizing). That per-sequence cost is what is left of a
  measured step once its bytes are paid for: the measured 1B runs were mostly that. `gpu_hours` uses both
  terms; `gpu_hours_floor` reads at full bandwidth with no host cost and computes at peak FLOPs (a hard lower
  bound); `gpu_hours_ceiling` charges every byte at the efficiency the measured 1B run achieved (as if the
  host cost grew with model size: an upper bound).
- prefill and training: by FLOPs (2N per prefilled token; 6N + attention per trained token, as sft_mfu.py
  counts them), at the FLOP rate the SFT benchmark achieved.
- upscale: the measured wall time of the same 8B -> 12B shape.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
HOURS_KEYS = ("gpu_hours", "gpu_hours_floor", "gpu_hours_ceiling")
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

GB = 1e9

# Spec sheets (SXM parts): dense bf16 tensor FLOP/s, HBM bandwidth, HBM size.
CARDS = {
    "H100": {"bf16_tflops": 989.0, "hbm_tb_s": 3.35, "memory_gb": 80.0,
             "note": "H100 SXM 80GB spec sheet: 989 dense bf16 TFLOP/s, 3.35 TB/s"},
    "H200": {"bf16_tflops": 989.0, "hbm_tb_s": 4.8, "memory_gb": 141.0,
             "note": "H200 SXM 141GB spec sheet: same compute as H100, 4.8 TB/s"},
}

# Model shapes. kv_bytes_per_token = layers_with_full_kv * 2 (K and V) * kv_heads * head_dim * 2 bytes (bf16).
MODELS = {
    "llama1b": {
        "params": 1.2358e9, "active_params": 1.2358e9, "weight_bytes": 2.4716e9, "layers": 16, "hidden": 2048,
        "kv_bytes_per_token": 16 * 2 * 8 * 64 * 2,
        "note": "the random-weights Llama-3.2-1B shape of the GPU benchmarks (sft_mfu.json: 16 layers, hidden "
                "2048, 8 KV heads of 64); bf16 weights",
    },
    "smollm2-135m": {
        "params": 1.345e8, "active_params": 1.345e8, "weight_bytes": 2.69e8, "layers": 30, "hidden": 576,
        "kv_bytes_per_token": 30 * 2 * 3 * 64 * 2,
        "note": "SmolLM2-135M (the rehearsal's model): 30 layers, hidden 576, 3 KV heads of 64; bf16",
    },
    "student-8b": {
        "params": 7.7954e9, "active_params": 7.7954e9, "weight_bytes": 2 * 7.7954e9, "layers": 32, "hidden": 4096,
        "kv_bytes_per_token": 32 * 2 * 8 * 128 * 2,
        "note": "llm-jp-4-8B: 32 layers, hidden 4096, FFN 14336, GQA 8 of 128; 7.795e9 params as upscale_time.json "
                "counted them on that shape; bf16",
    },
    "student-12b": {
        "params": 1.12852e10, "active_params": 1.12852e10, "weight_bytes": 2 * 1.12852e10, "layers": 48,
        "hidden": 4096, "kv_bytes_per_token": 48 * 2 * 8 * 128 * 2,
        "note": "the 8B after OpT-DeUS to 48 layers: 1.1285e10 params (upscale_time.json); bf16",
    },
    "teacher-20b": {
        "params": 2.09e10, "active_params": 3.6e9, "weight_bytes": 12.8e9, "layers": 24, "hidden": 2880,
        "kv_bytes_per_token": 12 * 2 * 8 * 64 * 2,
        "note": "gpt-oss-20b, MoE: 20.9e9 params, 3.6e9 active per token (model card). FLOPs use the active "
                "3.6e9. Decode bytes use ALL weights (12.8 GB, MXFP4 experts): at a batch of hundreds every one "
                "of the 32 experts per layer is routed to in every step, so a step reads them all. KV: only "
                "the 12 full-attention layers grow with context (the other 12 keep a 128-token window); 8 KV "
                "heads of 64",
    },
}

# vLLM runs at most this many sequences per step: its default max_num_seqs on >= 70 GiB cards.
MAX_NUM_SEQS = 1024


def kv_concurrency(model: dict, card: dict, memory_fraction: float, seq_tokens: float, cap: int) -> int:
    """Sequences that fit at once: KV space left after the weights, over one sequence's full KV."""
    kv_space = card["memory_gb"] * GB * memory_fraction - model["weight_bytes"]
    if kv_space <= 0:
        raise ValueError(f"weights ({model['weight_bytes'] / GB:.1f} GB) do not fit in "
                         f"{memory_fraction:.0%} of {card['memory_gb']:.0f} GB")
    return max(1, min(cap, int(kv_space // (model["kv_bytes_per_token"] * seq_tokens))))


def decode_step_bytes(model: dict, batch: int, mean_context: float) -> float:
    """Bytes one decode step reads: the weights once, plus the KV of every running sequence."""
    return model["weight_bytes"] + batch * mean_context * model["kv_bytes_per_token"]


def decode_efficiency(measured: dict, model: dict, card: dict) -> float:
    """Achieved share of the card's bandwidth in a measured decode run (tokens/s -> bytes/s)."""
    batch = measured["batch"]
    steps_per_s = measured["tokens_per_s"] / batch
    return steps_per_s * decode_step_bytes(model, batch, measured["mean_context"]) / (card["hbm_tb_s"] * 1e12)


def per_sequence_seconds(measured: dict, model: dict, card: dict, hbm_efficiency: float) -> float:
    """Host seconds per running sequence per step: the measured step time less its bytes at `hbm_efficiency`."""
    batch = measured["batch"]
    step = batch / measured["tokens_per_s"]
    reading = decode_step_bytes(model, batch, measured["mean_context"]) / (card["hbm_tb_s"] * 1e12 * hbm_efficiency)
    return max(0.0, (step - reading) / batch)


def decode_seconds(tokens: float, model: dict, card: dict, batch: int, mean_context: float,
                   efficiency: float, per_sequence_s: float = 0.0) -> float:
    """Seconds to generate `tokens` at `batch` sequences per step, reading at `efficiency` of the bandwidth
    and paying `per_sequence_s` per running sequence per step."""
    steps = tokens / batch
    reading = decode_step_bytes(model, batch, mean_context) / (card["hbm_tb_s"] * 1e12 * efficiency)
    return steps * (reading + batch * per_sequence_s)


def prefill_seconds(tokens: float, model: dict, flops_per_s: float) -> float:
    """Prompt tokens by FLOPs: 2 x active params per token (attention over short prompts left out)."""
    return tokens * 2 * model["active_params"] / flops_per_s


def train_flops_per_token(model: dict, mean_context: float, trainable_fraction: float = 1.0,
                          recompute: bool = False) -> float:
    """Forward 2N + activation gradients 2N + weight gradients 2N x trainable share (+ 2N re-forward under
    gradient checkpointing), plus sft_mfu.py's attention term 12 x layers x hidden x context."""
    n = model["params"]
    dense = (2 + 2 + 2 * trainable_fraction + (2 if recompute else 0)) * n
    return dense + 12 * model["layers"] * model["hidden"] * mean_context


def load_results(results_dir: Path) -> dict[str, dict]:
    """Every result file by stem; a file that is not JSON stops the run naming it."""
    out = {}
    for path in sorted(results_dir.glob("*.json")):
        if path.stem == "cost_model":
            continue
        try:
            out[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise SystemExit(f"{path}: not JSON ({err.msg}, line {err.lineno})") from None
    return out


def _card_of(result: dict) -> str | None:
    device = str(result.get("device") or result.get("card") or "")
    return next((name for name in CARDS if name in device), None)


def decode_calibration(results: dict[str, dict], card: str, stage: str, hbm_efficiency: float) -> dict:
    """The measured decode to calibrate `card` with: the stage's own measurement first (its host work, such as
    parsing, is part of the stage), on this card before another; then the bare `LLM.generate` of
    predict_overhead (the larger run first), this card before another; rehearsal results last (a 135M model
    sits even further from 8-20B than the 1B does)."""
    def from_predict(name, r):
        seqs = r["problems"] * r["n"]
        return {"model": "llama1b", "tokens_per_s": r["bare_tokens_per_s"], "seqs": seqs,
                "tokens_per_seq": r["tokens"] / seqs, "prompt_tokens": 120}

    def from_generate(name, r):
        return {"model": "llama1b", "tokens_per_s": r["stage_tokens_per_s"], "seqs": r["samples"],
                "tokens_per_seq": r["tokens_per_run"]["stage"][0] / r["samples"], "prompt_tokens": 300}

    def from_rehearsal(name, r):
        s = r.get("stages", {}).get(stage) or r.get("stages", {}).get("predict") or {}
        if not s.get("tokens_per_s") or not s.get("sequences") or not s.get("generated_tokens"):
            return None
        return {"model": "smollm2-135m", "tokens_per_s": s["tokens_per_s"], "seqs": s["sequences"],
                "tokens_per_seq": s["generated_tokens"] / s["sequences"], "prompt_tokens": 150}

    ordered = []
    by_card = sorted(results, key=lambda n: _card_of(results[n]) != card)
    if stage == "generate":
        ordered += [(n, from_generate) for n in by_card
                    if n.startswith("generate_vs_engine") and _card_of(results[n])]
    for same_card in (True, False):
        names = [n for n in results if (_card_of(results[n]) == card) == same_card]
        ordered += [(n, from_predict) for n in sorted(names, key=lambda n: -results[n].get("problems", 0))
                    if n.startswith("predict_overhead") and "logprobs" not in n and _card_of(results[n])]
    ordered += [(n, from_rehearsal) for n in results if n.startswith("rehearsal")]
    for name, read in ordered:
        measured = read(name, results[name])
        if measured is None:
            continue
        measured_card = _card_of(results[name]) or card
        model = MODELS[measured["model"]]
        measured["batch"] = min(measured["seqs"], MAX_NUM_SEQS)
        measured["mean_context"] = measured["prompt_tokens"] + measured["tokens_per_seq"] / 2
        efficiency = decode_efficiency(measured, model, CARDS[measured_card])
        host = per_sequence_seconds(measured, model, CARDS[measured_card], hbm_efficiency)
        return {"efficiency": round(efficiency, 4), "per_sequence_s": host,
                "source": f"benchmarks/results/{name}.json",
                "measured_on": measured_card, "measured": {k: round(v, 1) if isinstance(v, float) else v
                                                           for k, v in measured.items()},
                "note": f"efficiency: share of {measured_card}'s HBM bandwidth the measured decode used at batch "
                        f"{measured['batch']} (max_num_seqs {MAX_NUM_SEQS}); per_sequence_s: its step time less "
                        f"its bytes at hbm_efficiency {hbm_efficiency}, per running sequence; prompt length "
                        f"{measured['prompt_tokens']} tokens assumed (not recorded in the result)"
                                        + ("" if measured_card == card
                                           else f"; no {card} measurement: {measured_card}'s figures are used")}
    raise SystemExit(f"{RESULTS}: no decode measurement (predict_overhead_*, generate_vs_engine_*) for any card")


def train_calibration(results: dict[str, dict], card: str) -> dict:
    """Achieved training FLOP/s: the sft stage's own MFU run when there is one, else sft_mfu (TRL, packed)."""
    names = sorted(n for n in results if n.startswith("sft_stage_mfu")) + sorted(
        n for n in results if n.startswith("sft_mfu"))
    names.sort(key=lambda n: _card_of(results[n]) != card)  # stable: same card first, stage runs first
    for name in names:
        r = results[name]
        best = r.get("configs", {}).get(r.get("best_config"), r)
        if best.get("tflops"):
            achieved = best["tflops"] * 1e12
        elif r.get("tokens_per_s") and r.get("flops_per_token"):
            achieved = r["tokens_per_s"] * r["flops_per_token"]
        else:
            continue
        measured_card = _card_of(r) or card
        scale = CARDS[card]["bf16_tflops"] / CARDS[measured_card]["bf16_tflops"]
        return {"flops_per_s": achieved * scale, "source": f"benchmarks/results/{name}.json",
                "measured_on": measured_card,
                "note": f"{achieved / 1e12:.0f} TFLOP/s achieved (packed, padding-free, flex attention)"
                        + ("" if measured_card == card else
                           f", x{scale:.2f} for {card}'s spec-sheet bf16 peak")}
    raise SystemExit(f"{RESULTS}: no training measurement (sft_stage_mfu_*, sft_mfu*)")


def rl_calibration(results: dict[str, dict], card: str, hbm_efficiency: float) -> dict:
    """Seconds per step a measured RL loop spent beyond this model's generation + training time for it
    (weight sync into vLLM, the optimizer step, reward scoring, logging, the first step's warm-up), per GPU.
    The stage charges it per step, scaled by weight bytes: syncing and stepping grow with the parameters."""
    names = sorted((n for n in results if n.startswith(("rl_gpu", "rl_throughput")) and _card_of(results[n])),
                   key=lambda n: (_card_of(results[n]) != card, not n.startswith("rl_gpu")))
    for name in names:
        r = results[name]
        s = r.get("settings", {})
        if not (r.get("runtime_s") and r.get("generated_tokens") and s.get("num_generations")):
            continue
        model = MODELS["llama1b"]
        measured_card = CARDS[_card_of(r)]
        decode = decode_calibration(results, _card_of(r), "rl", hbm_efficiency)
        train = train_calibration(results, _card_of(r))
        completions = s["num_generations"] * s.get("prompts_per_step", 1) * r["steps"]
        per_seq = r["generated_tokens"] / completions
        batch = s["num_generations"] * s.get("prompts_per_step", 1)
        prompt = 150
        gen = decode_seconds(r["generated_tokens"], model, measured_card, batch, prompt + per_seq / 2,
                             hbm_efficiency, decode["per_sequence_s"])
        trained = completions * (prompt + per_seq)
        fit = trained * train_flops_per_token(model, prompt + per_seq, 1.0, False) / train["flops_per_s"]
        extra = max(0.0, (r["runtime_s"] - gen - fit) / r["steps"])
        return {"step_overhead_s": round(extra, 3), "per_weight_byte_s": extra / model["weight_bytes"],
                "source": f"benchmarks/results/{name}.json", "measured_s": r["runtime_s"],
                "modelled_s": round(gen + fit, 2),
                "note": f"(measured {r['runtime_s']} s - modelled generation {gen:.1f} s - training {fit:.1f} s) "
                        f"/ {r['steps']} steps of the 1B run; prompts of {prompt} tokens assumed"}
    return {"step_overhead_s": 0.0, "per_weight_byte_s": 0.0, "source": None,
            "note": "no RL measurement: loop overhead not modelled"}


# Quantities params.yaml does not fix. Each is a guess until the rehearsal or a full-scale shard measures it;
# every one can be overridden (--set name=value) and is written into the result with its reason.
ASSUMPTIONS = {
    "hbm_efficiency": (0.7, "share of HBM bandwidth vLLM's decode kernels reach on an 8-20B model (weights and KV "
                            "streamed); the rest of a measured step is charged as host time per sequence"),
    "teacher_prompt_tokens": (600, "harmony system message with 'Reasoning: high' + the condition prompt"),
    "teacher_output_tokens": (3000, "mean gpt-oss-20b reply at high effort on school math, of max_new_tokens "
                                    "8192 (unmeasured; the largest single unknown: every teacher hour scales "
                                    "with it)"),
    "survive_filters": (0.8, "share of generated rows left after format/length/language filters, dedup and "
                             "decontamination: these rows get an LLM verdict"),
    "judge_prompt_tokens": (3300, "verdict prompt: instructions + problem + solution (cut at 12000 chars)"),
    "judge_output_tokens": (600, "verdict at reasoning_effort medium, max 2048"),
    "judge_consistent": (0.7, "share of verdicts 'consistent': these rows get k agreement re-solves"),
    "agreement_pass": (0.8, "share of re-solved rows whose re-solves agree (>= min_agreement): kept"),
    "cpt_tokens": (1.0e9, "CPT token budget: params give none (1 epoch of cpt.corpus) and the reference's is "
                          "unknown (methods.md: [U])"),
    "sft_row_tokens": (3300, "prompt + teacher solution (analysis + final) per kept row"),
    "rl_prompt_tokens": (300, "chat template + problem"),
    "rl_completion_tokens": (3000, "mean RL completion, of max_completion_length 8192"),
    "predict_prompt_tokens": (300, "chat template + problem"),
    "predict_output_tokens": (3000, "mean answer length of the final model, of max_new_tokens 8192"),
    "rl_gpus": (8, "one 8-GPU node runs RL (num_processes auto): every GPU's colocated vLLM waits for its own "
                   "longest completion each step"),
    "gpu_memory_utilization": (0.9, "vLLM's default, for predict (the params leave it unset)"),
}


def assumption_values(overrides: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(overrides) - set(ASSUMPTIONS))
    if unknown:
        raise SystemExit(f"--set: unknown assumption(s) {unknown}; known: {sorted(ASSUMPTIONS)}")
    return {k: float(overrides.get(k, v)) for k, (v, _) in ASSUMPTIONS.items()}


def _grid_items(generate: dict) -> int:
    from ftllm.generate.grid import CURRICULUM

    fields = generate.get("fields") or CURRICULUM
    units = sum(len(u) for u in fields.values())
    return units * len(generate["difficulties"]) * len(generate.get("tool_use", [False])) * \
        generate["samples_per_cell"]


def _eval_problems(evalset: dict) -> int:
    from ftllm.evalset import TEMPLATES

    return len(evalset.get("templates") or TEMPLATES) * evalset["per_template"]


def sampling_hours(model: dict, card: dict, cal: dict, hbm_efficiency: float, flops_per_s: float,
                   sequences: float, prompt: float, output: float, memory_fraction: float,
                   tail_tokens: float = 0.0) -> dict:
    """One GPU's hours to prefill and sample `sequences` (vLLM continuous batching, KV-bound concurrency):
    modelled, floor and ceiling (module docstring). `tail_tokens`: one sequence decoded alone at the end."""
    batch = kv_concurrency(model, card, memory_fraction, prompt + output, MAX_NUM_SEQS)
    context = prompt + output / 2
    peak = card["bf16_tflops"] * 1e12
    out = {"batch": batch}
    for key, eff, host, fps in (("gpu_hours", hbm_efficiency, cal["per_sequence_s"], flops_per_s),
                                ("gpu_hours_floor", 1.0, 0.0, peak),
                                ("gpu_hours_ceiling", cal["efficiency"], 0.0, flops_per_s)):
        seconds = decode_seconds(sequences * output, model, card, batch, context, eff, host)
        seconds += prefill_seconds(sequences * prompt, model, fps)
        seconds += decode_seconds(tail_tokens, model, card, 1, prompt + tail_tokens / 2, eff, host)
        out[key] = seconds / 3600
    return out


def stage_costs(params: dict, a: dict, card_name: str, results: dict[str, dict], eval_problems: int,
                predict_problems: int) -> dict:
    """GPU-hours of every stage of `params` on `card_name`."""
    card = CARDS[card_name]
    train = train_calibration(results, card_name)
    flops = train["flops_per_s"]
    teacher, s8, s12 = MODELS["teacher-20b"], MODELS["student-8b"], MODELS["student-12b"]
    stages = {}

    g = params["generate"]
    items = _grid_items(g)
    cal = decode_calibration(results, card_name, "generate", a["hbm_efficiency"])
    mem = g["teacher"].get("gpu_memory_utilization", a["gpu_memory_utilization"])
    gen = sampling_hours(teacher, card, cal, a["hbm_efficiency"], flops, items, a["teacher_prompt_tokens"],
                         a["teacher_output_tokens"], mem)
    stages["generate"] = {**gen, "sequences": items, "decode_calibration": cal,
                          "work": f"{items:,} teacher generations (grid cells x samples_per_cell)"}

    j = params["judge"]
    cal = decode_calibration(results, card_name, "judge", a["hbm_efficiency"])
    verdict_rows = items * a["survive_filters"] * bool(j.get("llm_judge", True))
    verdict = sampling_hours(teacher, card, cal, a["hbm_efficiency"], flops, verdict_rows, a["judge_prompt_tokens"],
                             a["judge_output_tokens"], j["engine"].get("gpu_memory_utilization", 0.9))
    agreement = j.get("agreement", {})
    k = agreement.get("k", 0) if agreement.get("enabled") else 0
    resolve_rows = items * a["survive_filters"] * a["judge_consistent"]
    if k:
        resolves = sampling_hours(teacher, card, cal, a["hbm_efficiency"], flops, resolve_rows * k,
                                  a["teacher_prompt_tokens"], a["teacher_output_tokens"],
                                  j["engine"].get("gpu_memory_utilization", 0.9))
    else:
        resolves = dict.fromkeys(HOURS_KEYS, 0.0)
    stages["judge"] = {
        "gpu_hours": verdict["gpu_hours"] + resolves["gpu_hours"],
        "gpu_hours_floor": verdict["gpu_hours_floor"] + resolves["gpu_hours_floor"],
        "gpu_hours_ceiling": verdict["gpu_hours_ceiling"] + resolves["gpu_hours_ceiling"],
        "verdict_gpu_hours": verdict["gpu_hours"], "agreement_gpu_hours": resolves["gpu_hours"],
        "decode_calibration": cal,
        "work": f"{verdict_rows:,.0f} verdicts + {k} agreement re-solves x {resolve_rows:,.0f} rows",
    }

    c = params["cpt"]
    ctx = c["context_length"]
    fpt = train_flops_per_token(s8, ctx, 0.0, c.get("gradient_checkpointing", False))
    cpt_h = a["cpt_tokens"] * fpt / flops / 3600
    stages["cpt"] = {"gpu_hours": cpt_h,
                     "gpu_hours_floor": a["cpt_tokens"] * fpt / (card["bf16_tflops"] * 1e12) / 3600,
                     "flops_per_token": fpt, "train_calibration": train,
                     "work": f"{a['cpt_tokens']:.3g} tokens on the 8B, packed to {ctx}; DoRA trains adapters only "
                             "(weight gradients ~0), gradient checkpointing re-runs the forward; DoRA's own "
                             "weight-norm overhead is not modelled"}

    u = results.get("upscale_time")
    if u is None:
        raise SystemExit(f"{RESULTS}/upscale_time.json: missing (the upscale's only measurement)")
    stages["upscale"] = {"gpu_hours": u["seconds"] / 3600, "gpu_hours_floor": u["load_s"] / 3600,
                         "source": "benchmarks/results/upscale_time.json",
                         "work": f"measured {u['shape']['layers']} -> {u['shape']['target_layers']} layers on "
                                 f"{u['device']}, save included (floor: load only)"}

    s = params["sft"]
    kept = items * a["survive_filters"] * a["judge_consistent"] * (a["agreement_pass"] if k else 1.0)
    up = params.get("upscale", {})
    new_share = 1 - MODELS["student-8b"]["layers"] / up.get("target_layers", 48)
    trainable = new_share if (s.get("train_layers") == "new" or
                              (s.get("train_layers", "auto") == "auto" and up.get("freeze_original"))) else 1.0
    sft_tokens = kept * a["sft_row_tokens"] * s["num_train_epochs"]
    fpt = train_flops_per_token(s12, a["sft_row_tokens"], trainable, s.get("gradient_checkpointing", False))
    stages["sft"] = {"gpu_hours": sft_tokens * fpt / flops / 3600,
                     "gpu_hours_floor": sft_tokens * fpt / (card["bf16_tflops"] * 1e12) / 3600,
                     "kept_rows": kept, "tokens": sft_tokens, "trainable_share": round(trainable, 3),
                     "flops_per_token": fpt, "train_calibration": train,
                     "work": f"{kept:,.0f} kept rows x {a['sft_row_tokens']:.0f} tokens x {s['num_train_epochs']} "
                             f"epochs on the 12B; weight gradients for {trainable:.0%} of it (train_layers)"}

    r = params["rl"]
    cal = decode_calibration(results, card_name, "rl", a["hbm_efficiency"])
    loop = rl_calibration(results, card_name, a["hbm_efficiency"])
    group = r["num_generations"] * r["prompts_per_step"]
    prompt, completion = a["rl_prompt_tokens"], a["rl_completion_tokens"]
    rl_mem = r.get("vllm_gpu_memory_utilization", 0.3) if r.get("use_vllm") else a["gpu_memory_utilization"]
    seq = prompt + r["max_completion_length"]
    needed = (s12["weight_bytes"] + s12["kv_bytes_per_token"] * seq) / (card["memory_gb"] * GB)
    note = ""
    if needed > rl_mem:
        note = (f"vllm_gpu_memory_utilization {rl_mem} leaves no room for one {seq}-token sequence next to the "
                f"12B weights on {card_name}: needs >= {needed:.2f}; costed at that")
        rl_mem = needed
    # each of the node's GPUs samples its share of the step's group and waits for its own longest completion
    share = sampling_hours(s12, card, cal, a["hbm_efficiency"], flops, group / a["rl_gpus"], prompt, completion, rl_mem,
                           tail_tokens=r["max_completion_length"])
    per_step = {key: share[key] * a["rl_gpus"] for key in ("gpu_hours", "gpu_hours_floor", "gpu_hours_ceiling")}
    fpt = train_flops_per_token(s12, prompt + completion, 1.0, r.get("gradient_checkpointing", False))
    fit_h = group * (prompt + completion) * fpt / flops / 3600
    fit_floor = group * (prompt + completion) * fpt / (card["bf16_tflops"] * 1e12) / 3600
    steps = r["max_steps"]
    overhead_h = loop["per_weight_byte_s"] * s12["weight_bytes"] * a["rl_gpus"] / 3600
    stages["rl"] = {"gpu_hours": steps * (per_step["gpu_hours"] + fit_h + overhead_h),
                    "gpu_hours_floor": steps * (per_step["gpu_hours_floor"] + fit_floor),
                    "gpu_hours_ceiling": steps * (per_step["gpu_hours_ceiling"] + fit_h + overhead_h),
                    "loop_overhead_gpu_hours": steps * overhead_h,
                    "generation_gpu_hours": steps * per_step["gpu_hours"], "training_gpu_hours": steps * fit_h,
                    "batch": share["batch"], "decode_calibration": cal, "loop_calibration": loop,
                    "work": f"{steps} steps x {group} completions of the 12B (colocated vLLM at "
                            f"{rl_mem:.2f} of memory) on {a['rl_gpus']:.0f} GPUs; each GPU's share of a step ends "
                            f"with one {r['max_completion_length']}-token completion decoded alone",
                    **({"memory_note": note} if note else {})}

    p = params["predict"]
    cal = decode_calibration(results, card_name, "predict", a["hbm_efficiency"])
    n = p["sampling"]["n"]
    mem = p["engine"].get("gpu_memory_utilization", a["gpu_memory_utilization"])
    pred = sampling_hours(s12, card, cal, a["hbm_efficiency"], flops, 2 * eval_problems * n, a["predict_prompt_tokens"],
                          a["predict_output_tokens"], mem, tail_tokens=2 * p["sampling"]["max_new_tokens"])
    stages["predict"] = {**pred, "decode_calibration": cal,
                         "work": f"predict@base and predict@final: 2 x {eval_problems} eval problems x N={n} "
                                 "(both costed as the 12B: the 8B base is cheaper)"}
    stages["evaluate"] = {"gpu_hours": 0.0, "gpu_hours_floor": 0.0, "work": "CPU only (grading and voting)"}
    for stage in stages.values():  # training and the upscale have no decode: their ceiling is their estimate
        stage.setdefault("gpu_hours_ceiling", stage["gpu_hours"])
    return stages


def submission_check(params: dict, a: dict, card_name: str, results: dict[str, dict], problems: int,
                     limit_min: float, gpus: int) -> dict:
    """Does predict at the params' N fit `limit_min` for `problems` on `gpus` x `card_name`? Also the largest
    N that fits, and the decode efficiency the run would need."""
    card = CARDS[card_name]
    p = params["predict"]
    cal = decode_calibration(results, card_name, "predict", a["hbm_efficiency"])
    flops = train_calibration(results, card_name)["flops_per_s"]
    n, max_new = p["sampling"]["n"], p["sampling"]["max_new_tokens"]
    mem = p["engine"].get("gpu_memory_utilization", a["gpu_memory_utilization"])

    def minutes(samples: int, key: str = "gpu_hours") -> float:
        out = sampling_hours(MODELS["student-12b"], card, cal, a["hbm_efficiency"], flops, problems * samples,
                             a["predict_prompt_tokens"], a["predict_output_tokens"], mem, tail_tokens=max_new)
        return out[key] * 60 / gpus

    at_n = minutes(n)
    fitting = [m for m in range(1, n + 1) if minutes(m) <= limit_min]
    return {"card": card_name, "gpus": gpus, "problems": problems, "n": n, "limit_min": limit_min,
            "minutes": round(at_n, 1), "fits": at_n <= limit_min, "max_n_that_fits": max(fitting, default=0),
            "minutes_floor": round(minutes(n, "gpu_hours_floor"), 1),
            "minutes_ceiling": round(minutes(n, "gpu_hours_ceiling"), 1),
            "max_n_that_fits_ceiling": max((m for m in range(1, n + 1)
                                            if minutes(m, "gpu_hours_ceiling") <= limit_min), default=0),
            "decode_calibration": cal,
            "note": "one process per GPU splitting the problems; the 12B in bf16; the 500-minute limit and the "
                    "submission hardware are not in any source (methods.md: [U]) -- both are parameters"}


# Knobs per stage, each tried over its values (mildest first) until the stage's hours halve.
KNOBS = {
    "generate": [("generate.samples_per_cell", lambda v: [v * 3 // 4, v // 2])],
    "judge": [("judge.agreement.k", lambda v: list(range(v - 1, 0, -1)))],
    "cpt": [("assumption cpt_tokens", lambda v: [v / 2])],
    "sft": [("sft.num_train_epochs", lambda v: [v - 1, v - 2, v / 2])],
    "rl": [("rl.vllm_gpu_memory_utilization", lambda v: [0.4, 0.5, 0.6]),
           ("rl.max_completion_length", lambda v: [v * 3 // 4, v // 2])],
    "predict": [("predict.sampling.n", lambda v: [v * 3 // 4, v // 2])],
}


def _get(tree: dict, dotted: str):
    for key in dotted.split("."):
        tree = tree[key]
    return tree


def _with(tree: dict, dotted: str, value) -> dict:
    out = json.loads(json.dumps(tree))
    node = out
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    return out


def halving_knobs(stage: str, params: dict, a: dict, costs, baseline: float) -> list[dict]:
    """For each of the stage's knobs, the mildest value that brings its hours to half or less."""
    found = []
    for path, values in KNOBS.get(stage, []):
        if path.startswith("assumption "):
            name = path.split()[1]
            current = a[name]
            tries = [(v, params, {**a, name: v}) for v in values(current)]
        else:
            current = _get(params, path)
            tries = [(v, _with(params, path, v), a) for v in values(current)]
        for value, p, aa in tries:
            hours = costs(p, aa)[stage]["gpu_hours"]
            if hours <= baseline / 2 + 1e-9:
                found.append({"knob": path, "from": current, "to": value, "gpu_hours": round(hours, 1),
                              "saved_share": round(1 - hours / baseline, 3)})
                break
    return found


def build(params: dict, results: dict[str, dict], overrides: dict[str, float], cards: list[str],
          submission: dict) -> dict:
    a = assumption_values(overrides)
    eval_problems = _eval_problems(params["evalset"])
    per_card = {c: stage_costs(params, a, c, results, eval_problems, submission["problems"]) for c in cards}
    names = list(next(iter(per_card.values())))
    stages = {}
    for name in names:
        stages[name] = {"gpu_hours": {c: round(per_card[c][name]["gpu_hours"], 1) for c in cards},
                        "gpu_hours_floor": {c: round(per_card[c][name]["gpu_hours_floor"], 1) for c in cards},
                        "gpu_hours_ceiling": {c: round(per_card[c][name]["gpu_hours_ceiling"], 1) for c in cards},
                        "work": per_card[cards[0]][name]["work"],
                        "per_card": {c: _rounded({k: v for k, v in per_card[c][name].items()
                                                  if k not in (*HOURS_KEYS, "work")})
                                     for c in cards}}
    totals = {c: round(sum(per_card[c][n]["gpu_hours"] for n in names), 1) for c in cards}
    dominant = {}
    for c in cards:
        top = max(names, key=lambda n: per_card[c][n]["gpu_hours"])
        base = per_card[c][top]["gpu_hours"]
        dominant[c] = {"stage": top, "gpu_hours": round(base, 1), "share_of_total": round(base / totals[c], 3),
                       "halved_by": halving_knobs(top, params, a, lambda p, aa, c=c: stage_costs(
                           p, aa, c, results, eval_problems, submission["problems"]), base)}
    used = sorted({v for c in cards for n in names for v in _sources(per_card[c][n])})
    return {
        "benchmark": "cost_model",
        "stages": stages,
        "total_gpu_hours": totals,
        "total_gpu_hours_floor": {c: round(sum(per_card[c][n]["gpu_hours_floor"] for n in names), 1)
                                  for c in cards},
        "total_gpu_hours_ceiling": {c: round(sum(per_card[c][n]["gpu_hours_ceiling"] for n in names), 1)
                                    for c in cards},
        "dominant": dominant,
        "submission": submission_check(params, a, submission["card"], results, submission["problems"],
                                       submission["limit_min"], submission["gpus"]),
        "measurements_used": used,
        "measurements_available": sorted(f"benchmarks/results/{n}.json" for n in results),
        "assumptions": {k: {"value": a[k], "why": ASSUMPTIONS[k][1]} for k in ASSUMPTIONS},
        "cards": CARDS, "models": MODELS, "max_num_seqs": MAX_NUM_SEQS,
        "eval_problems": eval_problems,
        "method": __doc__.split("Scaling rules:")[1].strip(),
    }


def _sources(stage: dict) -> list[str]:
    out = []
    for value in stage.values():
        if isinstance(value, dict):
            out += _sources(value)
    if isinstance(stage.get("source"), str):
        out.append(stage["source"])
    return out


def _rounded(value):
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=None,
                        help="a params file (default: conf/ composed with the full profile, whatever params.yaml "
                             "the last experiment left)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of measured results")
    parser.add_argument("--cards", default="H100,H200", help="comma-separated: " + ", ".join(CARDS))
    parser.add_argument("--submission-gpu", default="H100", choices=sorted(CARDS),
                        help="the competition's inference card (not published: a guess)")
    parser.add_argument("--submission-gpus", type=int, default=1)
    parser.add_argument("--problems", type=int, default=100,
                        help="problems in the scored run (the dev set has 100; the test set's size is not public)")
    parser.add_argument("--limit-min", type=float, default=500.0, help="the inference time limit, minutes")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                        help="override an assumption (repeat); names: " + ", ".join(ASSUMPTIONS))
    parser.add_argument("--out", type=Path, default=RESULTS / "cost_model.json")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    import yaml

    from ftllm.provenance import provenance

    args = parse_args(argv)
    overrides = {}
    for item in args.overrides:
        name, sep, value = item.partition("=")
        try:
            overrides[name] = float(value) if sep else float("nan")
        except ValueError:
            raise SystemExit(f"--set {item}: expected NAME=NUMBER") from None
        if math.isnan(overrides[name]):
            raise SystemExit(f"--set {item}: expected NAME=NUMBER")
    cards = [c.strip() for c in args.cards.split(",") if c.strip()]
    unknown = [c for c in cards if c not in CARDS]
    if unknown:
        raise SystemExit(f"--cards: unknown card(s) {unknown}; known: {sorted(CARDS)}")
    if args.params is not None:
        try:
            params = yaml.safe_load(args.params.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise SystemExit(f"{args.params}: {err}") from None
    else:
        from ftllm.profiles import compose

        params = compose("full")
    submission = {"card": args.submission_gpu, "gpus": args.submission_gpus, "problems": args.problems,
                  "limit_min": args.limit_min}
    try:
        result = build(params, load_results(args.results), overrides, cards, submission)
    except KeyError as err:
        raise SystemExit(f"{args.params or 'conf/ (full profile)'}: missing key {err}") from None
    result |= provenance(argv if argv is not None else sys.argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for name, stage in result["stages"].items():
        print(f"{name:9s} " + "  ".join(
            f"{c} {stage['gpu_hours'][c]:>8,.0f} h "
            f"[{stage['gpu_hours_floor'][c]:,.0f}-{stage['gpu_hours_ceiling'][c]:,.0f}]"
            for c in cards))
    for c, d in result["dominant"].items():
        print(f"{c}: {d['stage']} dominates ({d['share_of_total']:.0%}); halved by {d['halved_by']}")
    s = result["submission"]
    print(f"predict N={s['n']} x {s['problems']} problems on {s['gpus']}x {s['card']}: {s['minutes']} min "
          f"[{s['minutes_floor']}-{s['minutes_ceiling']}], limit {s['limit_min']}: "
          f"{'fits' if s['fits'] else 'does not fit'}")


if __name__ == "__main__":
    main()
