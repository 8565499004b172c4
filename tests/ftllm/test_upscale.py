"""OpT-DeUS: the layer map, OT alignment and function preservation on the tiny model."""
from __future__ import annotations

import json

import pytest
import torch

from ftllm.config import ConfigError, build
from ftllm.upscale import (
    UpscaleConfig,
    align_rows,
    fuse_layers,
    is_coupling,
    layer_map,
    new_layer_indices,
    ot_plan,
    trainable_layers,
    upscale,
    upscale_model,
)


def test_layer_map_32_to_48_matches_the_paper():
    mapping = layer_map(32, 48)
    assert len(mapping) == 48
    assert mapping[:16] == [(i,) for i in range(16)]
    # originals 16..31 at the odd positions 17..47
    assert [mapping[p] for p in range(17, 48, 2)] == [(i,) for i in range(16, 32)]
    # new layers at the even positions 16..46, fused from their neighbours' originals
    assert [mapping[p] for p in range(16, 47, 2)] == [(i - 1, i) for i in range(16, 32)]
    assert new_layer_indices(mapping) == list(range(16, 47, 2))


@pytest.mark.parametrize("n,m", [(4, 6), (30, 36), (2, 3), (5, 9)])
def test_layer_map_small_cases(n, m):
    mapping = layer_map(n, m)
    assert len(mapping) == m
    originals = [src[0] for src in mapping if len(src) == 1]
    assert originals == list(range(n))  # every original once, in order
    for pos in new_layer_indices(mapping):
        # a new layer is fused from exactly the originals placed right below and above it
        assert mapping[pos] == (mapping[pos - 1][0], mapping[pos + 1][0])
    assert len(new_layer_indices(mapping)) == m - n
    # new layers only in the top part: everything below the first new one is untouched
    first = new_layer_indices(mapping)[0]
    assert mapping[:first] == [(i,) for i in range(first)]


def test_layer_map_4_to_6_exact():
    assert layer_map(4, 6) == [(0,), (1,), (1, 2), (2,), (2, 3), (3,)]


@pytest.mark.parametrize("n,m", [(4, 4), (4, 3), (4, 8)])
def test_layer_map_rejects_impossible_targets(n, m):
    with pytest.raises(ValueError, match="target_layers"):
        layer_map(n, m)


def test_ot_plan_recovers_a_permutation():
    torch.manual_seed(0)
    w_next = torch.randn(48, 16)
    perm = torch.randperm(48)
    w_prev = w_next[perm]
    plan = ot_plan(w_prev, w_next, reg=0.01)
    assert torch.equal(plan.argmax(dim=1), perm)
    torch.testing.assert_close(align_rows(w_prev, plan, rescale=True), w_next, atol=1e-4, rtol=0)
    # the reference's bare Tᵀ·W shrinks the aligned rows by 1/n
    torch.testing.assert_close(align_rows(w_prev, plan, rescale=False), w_next / 48, atol=1e-5, rtol=0)


def test_plain_sinkhorn_underflow_falls_back_to_the_log_domain():
    import ot

    torch.manual_seed(0)
    # unrelated rows at distances of ~10-25, like trained neighbour layers: exp(-cost/0.06) underflows in fp32
    w_next, w_prev = torch.randn(32, 16) * 3, torch.randn(32, 16) * 3
    uniform = torch.full((32,), 1 / 32)
    plain = ot.sinkhorn(uniform, uniform, torch.cdist(w_prev, w_next), 0.06, warn=False)
    assert not is_coupling(plain)  # the premise: the reference's solver breaks down here
    plan = ot_plan(w_prev, w_next, reg=0.06, method="sinkhorn")
    assert is_coupling(plan)
    torch.testing.assert_close(plan.sum(dim=1), uniform, atol=1e-3 / 32, rtol=0)


def _config(**overrides):
    return build(UpscaleConfig, {"target_layers": 6, "device": "cpu", "dtype": "float32", **overrides})


def test_config_rejects_unknown_fusion():
    with pytest.raises(ConfigError, match="fusion"):
        _config(fusion="slerp")


def test_fused_layer_of_permuted_twins_is_the_twin():
    """Two neighbours that differ by a row permutation fuse (with rescale) back into the upper one."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    torch.manual_seed(1)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2)
    upper = LlamaDecoderLayer(cfg, 1)
    for p in upper.parameters():
        torch.nn.init.normal_(p)
    lower = LlamaDecoderLayer(cfg, 0)
    lower.load_state_dict(upper.state_dict())
    perm = torch.randperm(64)
    with torch.no_grad():
        lower.mlp.gate_proj.weight.copy_(upper.mlp.gate_proj.weight[perm])
    fused = fuse_layers(lower, upper, _config(reg=0.01, zero_init=False), torch.device("cpu"))
    torch.testing.assert_close(fused.mlp.gate_proj.weight, upper.mlp.gate_proj.weight, atol=1e-3, rtol=0)
    torch.testing.assert_close(fused.self_attn.q_proj.weight, upper.self_attn.q_proj.weight, atol=1e-3, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("fusion,rescale", [("ot", True), ("ot", False), ("average", True)])
def test_grown_model_computes_the_original_function(tiny_model, fusion, rescale):
    from ftllm.models import load_model

    model, _ = load_model(tiny_model, dtype="float32")
    model.eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    with torch.no_grad():
        before = model(ids).logits
    originals = list(model.model.layers)
    manifest = upscale_model(model, _config(fusion=fusion, ot_rescale=rescale), torch.device("cpu"))
    assert model.config.num_hidden_layers == 6 and len(model.model.layers) == 6
    assert manifest["new_layers"] == [2, 4]
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == list(range(6))
    assert model.model.layers[3] is originals[2]  # originals are moved, not copied
    new = model.model.layers[2]
    assert torch.count_nonzero(new.self_attn.o_proj.weight) == 0
    assert torch.count_nonzero(new.mlp.down_proj.weight) == 0
    assert torch.count_nonzero(new.mlp.gate_proj.weight) > 0
    with torch.no_grad():
        after = model(ids).logits
        # generation exercises the KV cache, which is indexed by layer_idx
        model.generate(ids[:1], max_new_tokens=3, do_sample=False)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_upscale_writes_a_reloadable_checkpoint(tiny_model, tmp_path):
    from ftllm.models import load_model

    out = tmp_path / "up"
    metrics = upscale(_config(target_layers=7), tiny_model, out)
    assert metrics["num_new_layers"] == 3 and metrics["parameters_after"] > metrics["parameters_before"]
    model, _ = load_model(out, dtype="float32")
    assert model.config.num_hidden_layers == 7
    manifest = json.loads((out / "upscale.json").read_text())
    assert manifest["layer_map"][1] == [0, 1] and manifest["ot_rescale"] is True
    assert trainable_layers(out) is None  # default: SFT trains the whole model (Open-R1)
    assert not (tmp_path / "up.tmp").exists()
    frozen = tmp_path / "frozen"
    upscale(_config(target_layers=7, freeze_original=True), tiny_model, frozen)
    assert trainable_layers(frozen) == [1, 3, 5]  # the option: only the inserted layers train


def test_trainable_layers_without_manifest_or_freeze(tmp_path):
    assert trainable_layers(tmp_path) is None
    (tmp_path / "upscale.json").write_text(json.dumps({"new_layers": [2], "freeze_original": False}))
    assert trainable_layers(tmp_path) is None
