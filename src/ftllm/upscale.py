"""OpT-DeUS depth up-scaling: grow an N-layer Llama-style model to M layers with optimal transport.

New layers go into the upper part of the stack, one between each adjacent pair of the top
(M - N) original layers, and each is fused from its two neighbours (Cao, Wang, Aletras,
arXiv 2508.08011). Per module, the rows (output neurons) of the lower neighbour are aligned
to the upper neighbour's with an entropic OT plan (Sinkhorn on the Euclidean cost between
rows), then the two are averaged. The new layer's `o_proj` and `down_proj` are zeroed, so it
starts as an identity residual block and the grown model computes the original function.

    python stages/upscale.py --params params.yaml --model models/cpt --out models/upscaled

`upscale.json`, written next to the weights, records the layer map and which layers are new,
so the SFT stage can train only those (`trainable_layers`).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from pathlib import Path

from ftllm.config import ConfigError
from ftllm.io import InputError, atomic_path

log = logging.getLogger(__name__)

MANIFEST = "upscale.json"
# Modules whose output feeds the residual stream: zeroing them makes a block an identity.
RESIDUAL_OUTPUTS = ("self_attn.o_proj", "mlp.down_proj")


@dataclasses.dataclass(frozen=True)
class UpscaleConfig:
    target_layers: int  # M, the depth after up-scaling (e.g. 48 for a 32-layer model)
    fusion: str = "ot"  # ot (OpT-DeUS) | average (plain neighbour mean, the AVG baseline)
    # True: align with n·Tᵀ·W (rows keep their scale); False: Tᵀ·W as in the reference code,
    # which shrinks the aligned weight by 1/n (fused q/k/v/gate/up ≈ ½·W_next).
    ot_rescale: bool = True
    reg: float = 0.06  # Sinkhorn entropic regularisation (reference value)
    num_iter_max: int = 10000  # Sinkhorn iteration cap (reference value)
    # Sinkhorn stops when the marginal error falls below stop_threshold·‖b‖ (‖b‖ = 1/√n): relative, as
    # fp32 floors the absolute error near 1e-9, where POT's absolute 1e-9 would always run to the cap.
    # 1e-3 takes ~100 log-domain iterations on SmolLM2's layers and gives the same plan peaks as 1e-4
    # (which takes 400-800) to three decimals.
    stop_threshold: float = 1e-3
    # sinkhorn_log: stable in fp32 for any cost. Trained weights have row distances of 1-30, so with
    # reg 0.06 the plain solver's exp(-cost/reg) underflows to an all-zero plan (it falls back to the
    # log domain then). The reference called plain `sinkhorn`, presumably in float64 [unverified].
    sinkhorn_method: str = "sinkhorn_log"
    zero_init: bool = True  # zero o_proj/down_proj of new layers so the function is preserved
    # tell SFT (train_layers: auto) to train only the new layers. Off by default: Open-R1's SFT trains
    # every weight; freezing the originals (as the OpT-DeUS code does) cuts optimizer memory ~3x and keeps
    # the base model's knowledge intact, at the cost of less room to learn the new task
    freeze_original: bool = False
    dtype: str = "bfloat16"  # dtype the model is loaded and saved in; fusion itself runs in fp32
    device: str = "auto"  # where fusion runs: auto (cuda when available) | cpu | cuda

    def __post_init__(self) -> None:
        if self.target_layers < 2:
            raise ValueError(f"target_layers must be >= 2, got {self.target_layers}")
        if self.fusion not in ("ot", "average"):
            raise ValueError(f"fusion must be ot or average, got {self.fusion!r}")
        if self.stop_threshold <= 0:
            raise ValueError(f"stop_threshold must be > 0, got {self.stop_threshold}")
        if self.reg <= 0:
            raise ValueError(f"reg must be > 0, got {self.reg}")
        if self.num_iter_max < 1:
            raise ValueError(f"num_iter_max must be >= 1, got {self.num_iter_max}")
        if self.sinkhorn_method not in ("sinkhorn", "sinkhorn_log"):
            raise ValueError(f"sinkhorn_method must be sinkhorn or sinkhorn_log, got {self.sinkhorn_method!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")


# ---------------------------------------------------------------------------
# Where the layers go.

def layer_map(num_layers: int, target_layers: int) -> list[tuple[int, ...]]:
    """For each new position, `(i,)` copies original layer i and `(i, j)` fuses originals i and j.

    The k = M - N new layers sit between the pairs (N-k-1, N-k), ..., (N-2, N-1): the bottom
    N-k originals keep their positions and each of the top k originals gets a new layer below it.
    32 -> 48: positions 0-15 copy 0-15, 17, 19, ..., 47 hold 16-31, and 16, 18, ..., 46 are fused.
    """
    extra = target_layers - num_layers
    if extra < 1:
        raise ValueError(f"target_layers ({target_layers}) must exceed the model's {num_layers} layers")
    if extra > num_layers - 1:
        raise ValueError(
            f"target_layers ({target_layers}) may add at most {num_layers - 1} layers to a {num_layers}-layer model"
        )
    keep = num_layers - extra
    mapping: list[tuple[int, ...]] = [(i,) for i in range(keep)]
    for orig in range(keep, num_layers):
        mapping.append((orig - 1, orig))
        mapping.append((orig,))
    return mapping


def checked_layer_map(num_layers: int, target_layers: int) -> list[tuple[int, ...]]:
    """`layer_map`, with an impossible target reported as a params error."""
    try:
        return layer_map(num_layers, target_layers)
    except ValueError as err:  # the depth is a property of the model, so only known here
        raise ConfigError(f"upscale.target_layers: {err}") from None


def new_layer_indices(mapping: list[tuple[int, ...]]) -> list[int]:
    return [pos for pos, src in enumerate(mapping) if len(src) == 2]


# ---------------------------------------------------------------------------
# Optimal-transport fusion of one module.

def ot_plan(w_prev, w_next, reg: float, num_iter_max: int = 10000, stop_threshold: float = 1e-3,
            method: str = "sinkhorn_log"):
    """Entropic OT coupling (n x n, marginals 1/n) between the rows of two equal-shape matrices."""
    import ot
    import torch

    w_prev, w_next = w_prev.float(), w_next.float()
    n = w_prev.shape[0]
    cost = torch.cdist(w_prev, w_next)
    marginal = torch.full((n,), 1.0 / n, dtype=torch.float32, device=w_prev.device)
    stop = stop_threshold / n**0.5
    plan = ot.sinkhorn(marginal, marginal, cost, reg, method=method, numItermax=num_iter_max, stopThr=stop, warn=False)
    if method == "sinkhorn" and not is_coupling(plan):
        log.warning("plain Sinkhorn under/overflowed on a %d-row plan (costs up to %.3g, reg %g); "
                    "using the log-domain solver", n, float(cost.max()), reg)
        plan = ot.sinkhorn(marginal, marginal, cost, reg, method="sinkhorn_log", numItermax=num_iter_max,
                           stopThr=stop, warn=False)
    return plan


def is_coupling(plan, tolerance: float = 1e-2) -> bool:
    """Finite and of total mass 1: plain Sinkhorn returns near-zero plans once exp(-cost/reg) underflows."""
    import torch

    return bool(torch.isfinite(plan).all()) and abs(float(plan.sum()) - 1.0) < tolerance


def scaled(plan, rescale: bool):
    """n·T is (close to) a permutation matrix; the bare coupling T sums to 1 over all n² entries."""
    return plan * plan.shape[0] if rescale else plan


def align_rows(weight, plan, rescale: bool):
    """Move the rows of `weight` (previous layer) onto the next layer's row order: (n·)Tᵀ W."""
    return scaled(plan, rescale).T @ weight


def _fuse_ot(prev: dict, nxt: dict, config: UpscaleConfig, stats: list) -> dict:
    """Fuse the tensors of two neighbouring layers following the OpT-DeUS module table."""
    import torch

    def plan_for(w1, w2):
        plan = ot_plan(w1, w2, config.reg, config.num_iter_max, config.stop_threshold, config.sinkhorn_method)
        # peak of n·T per row: 1.0 for a hard permutation, 1/n for a uniform (uninformative) plan
        stats.append(float((plan.max(dim=1).values * plan.shape[0]).mean()))
        return plan

    def fuse_rows(name, w_prev):
        plan = plan_for(w_prev, nxt[name + ".weight"])
        out[name + ".weight"] = (align_rows(w_prev, plan, config.ot_rescale) + nxt[name + ".weight"]) / 2
        if name + ".bias" in prev:  # biases belong to rows, so they travel with them (Qwen2 q/k/v)
            bias = align_rows(prev[name + ".bias"][:, None], plan, config.ot_rescale)[:, 0]
            out[name + ".bias"] = (bias + nxt[name + ".bias"]) / 2
        return plan

    out: dict = {}
    for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
        fuse_rows(name, prev[name + ".weight"])
    # T_o aligns the hidden (residual) dimension; the norm and the MLP inputs reuse it
    t_o = scaled(fuse_rows("self_attn.o_proj", prev["self_attn.o_proj.weight"]), config.ot_rescale)
    hidden = t_o.shape[0]
    # post-attention norm sees both residual paths: half aligned through T_o, half untouched
    t_in = 0.5 * t_o + 0.5 * torch.eye(hidden, dtype=t_o.dtype, device=t_o.device)
    out["post_attention_layernorm.weight"] = (
        prev["post_attention_layernorm.weight"] @ t_in + nxt["post_attention_layernorm.weight"]
    ) / 2
    for name in ("mlp.gate_proj", "mlp.up_proj"):
        fuse_rows(name, prev[name + ".weight"] @ t_o)
    if not config.zero_init:  # with zero-init the fused down_proj would be thrown away
        fuse_rows("mlp.down_proj", prev["mlp.down_proj.weight"])
    return out


def fuse_layers(prev_layer, next_layer, config: UpscaleConfig, device, stats: list | None = None):
    """Build a new decoder layer from two neighbours; returns a module shaped like `prev_layer`."""
    import torch

    stats = [] if stats is None else stats
    prev = {k: v.detach().to(device, torch.float32) for k, v in prev_layer.state_dict().items()}
    nxt = {k: v.detach().to(device, torch.float32) for k, v in next_layer.state_dict().items()}
    fused = _fuse_ot(prev, nxt, config, stats) if config.fusion == "ot" else {}
    # anything the OT table does not name (input norm, q/k norms of Qwen3, ...) is averaged
    for key in prev:
        fused.setdefault(key, (prev[key] + nxt[key]) / 2)
    if config.zero_init:
        for key in fused:
            if key.startswith(RESIDUAL_OUTPUTS):
                fused[key] = torch.zeros_like(fused[key])
    layer = copy.deepcopy(prev_layer)
    reference = prev_layer.state_dict()
    layer.load_state_dict({k: v.to(reference[k].device, reference[k].dtype) for k, v in fused.items()})
    return layer


# ---------------------------------------------------------------------------
# Whole model.

def _decoder_layers(model):
    try:
        return model.model.layers
    except AttributeError:
        raise InputError(f"{type(model).__name__}: expected a Llama-style model with model.model.layers") from None


def upscale_model(model, config: UpscaleConfig, device=None) -> dict:
    """Grow `model` in place to `config.target_layers` layers; returns the manifest for upscale.json."""
    import torch
    from torch import nn
    from tqdm import tqdm

    device = device or resolve_device(config.device)
    layers = _decoder_layers(model)
    mapping = checked_layer_map(len(layers), config.target_layers)
    log.info("upscale %d -> %d layers, fusion=%s, ot_rescale=%s (%s)", len(layers), config.target_layers,
             config.fusion, config.ot_rescale, "n·Tᵀ·W" if config.ot_rescale else "Tᵀ·W, reference-compatible")
    stats: list[float] = []
    grown = []
    with torch.no_grad():
        for src in tqdm(mapping, desc="upscale", unit="layer"):
            if len(src) == 1:
                grown.append(layers[src[0]])  # reused, not copied: no second copy of the model
            else:
                grown.append(fuse_layers(layers[src[0]], layers[src[1]], config, device, stats))
    for idx, layer in enumerate(grown):
        # the KV cache is indexed by layer_idx, so every layer must know its new position
        if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = idx
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = idx
    model.model.layers = nn.ModuleList(grown)
    _update_config(model.config, mapping)
    return {
        "original_layers": len(layers),
        "target_layers": config.target_layers,
        "new_layers": new_layer_indices(mapping),
        "layer_map": [list(src) for src in mapping],
        "fusion": config.fusion,
        "ot_rescale": config.ot_rescale,
        "zero_init": config.zero_init,
        "freeze_original": config.freeze_original,
        "ot_plan_peak_mean": sum(stats) / len(stats) if stats else None,
    }


def _update_config(model_config, mapping) -> None:
    model_config.num_hidden_layers = len(mapping)
    types = getattr(model_config, "layer_types", None)
    if isinstance(types, (list, tuple)) and types:
        # a fused layer behaves like its lower neighbour (sliding or full attention)
        model_config.layer_types = [types[src[0]] for src in mapping]


def resolve_device(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def upscale(config: UpscaleConfig, model_dir: str | Path, out_dir: str | Path) -> dict:
    """The `upscale` stage: load, grow, save atomically with upscale.json; returns metrics."""
    from transformers import AutoConfig

    from ftllm.models import load_model

    try:
        depth = AutoConfig.from_pretrained(str(model_dir)).num_hidden_layers
    except OSError as err:
        raise InputError(f"{model_dir}: cannot load a model there ({str(err).splitlines()[0]})") from None
    checked_layer_map(depth, config.target_layers)  # fail before minutes of loading
    device = resolve_device(config.device)
    times = {}
    start = time.perf_counter()
    # on a GPU the whole model lives there in bf16, so fusion never waits on host copies
    kwargs = {"device_map": str(device)} if device.type == "cuda" else {}
    model, tokenizer = load_model(model_dir, dtype=config.dtype, **kwargs)
    params_before = model.num_parameters()
    times["load_s"] = time.perf_counter() - start
    mark = time.perf_counter()
    manifest = upscale_model(model, config, device)
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)  # kernels run asynchronously: charge them to fusion, not to saving
    times["fuse_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    save_upscaled(model, tokenizer, manifest, out_dir)
    times["save_s"] = time.perf_counter() - mark
    times["seconds"] = time.perf_counter() - start
    return {
        **{k: v for k, v in manifest.items() if k not in ("layer_map", "new_layers")},
        "num_new_layers": len(manifest["new_layers"]),
        "parameters_before": params_before,
        "parameters_after": model.num_parameters(),
        "device": str(device),
        **{k: round(v, 3) for k, v in times.items()},
    }


def save_upscaled(model, tokenizer, manifest: dict, out_dir: str | Path) -> None:
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def trainable_layers(checkpoint_dir: str | Path) -> list[int] | None:
    """Indices of the layers a later stage should train, or None to train all of them.

    None when the checkpoint was not up-scaled or `freeze_original` was off.
    """
    path = Path(checkpoint_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
    if not manifest.get("freeze_original", False):
        return None
    return list(manifest["new_layers"])
