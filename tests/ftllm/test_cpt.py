"""cpt: packing, corpus reading, RoPE context extension, DoRA training with resume and merge."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftllm.config import ConfigError, build
from ftllm.io import InputError
from ftllm.train.cpt import CPTConfig, extend_context, pack_stream, stream_documents

CORPUS = Path(__file__).resolve().parents[2] / "assets" / "corpus"


def _config(**overrides) -> CPTConfig:
    values = {"corpus": [str(CORPUS)], "context_length": 4096, "rope_theta": 40000.0, "num_processes": 1,
              "attn_implementation": "sdpa"}  # flex attention has no backward on CPU
    return build(CPTConfig, {**values, **overrides})


class CharTokenizer:
    """One token per character, EOS = 0: block arithmetic in tests reads off the text lengths."""

    eos_token_id = 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(c) for c in t] for t in texts]}


def _documents(texts):
    from datasets import IterableDataset

    return IterableDataset.from_generator(lambda: ({"text": t} for t in texts))


def test_pack_stream_cuts_blocks_and_restarts_positions_per_document():
    blocks = list(pack_stream(_documents(["abc", "de", "fghijk"]), CharTokenizer(), 4))
    # abc0 de0f ghij (k0 is the dropped tail)
    assert [b["input_ids"] for b in blocks] == [[97, 98, 99, 0], [100, 101, 0, 102], [103, 104, 105, 106]]
    assert [b["position_ids"] for b in blocks] == [[0, 1, 2, 3], [0, 1, 2, 0], [0, 1, 2, 3]]
    assert all(b["labels"] == b["input_ids"] for b in blocks)
    joined = list(pack_stream(_documents(["abc", "de"]), CharTokenizer(), 4, separate_documents=False))
    assert [b["position_ids"] for b in joined] == [[0, 1, 2, 3]]


def test_pack_stream_stops_at_the_token_budget():
    blocks = list(pack_stream(_documents(["x" * 100]), CharTokenizer(), 10, token_budget=30))
    assert len(blocks) == 3


def test_a_corpus_below_one_block_is_one_line():
    with pytest.raises(InputError, match=r"^notes: the corpus has 7 tokens, fewer than one block of 8 tokens"):
        list(pack_stream(_documents(["abc", "de"]), CharTokenizer(), 8, source="notes"))


def test_hub_dataset_streams_through_load_dataset(tmp_path):
    """cpt.dataset goes through datasets.load_dataset(..., streaming=True); a local json builder stands in
    for the hub."""
    data = tmp_path / "arxiv.jsonl"
    data.write_text("".join(json.dumps({"body": f"doc {i} " * 5, "meta": i}) + "\n" for i in range(20)))
    config = _config(dataset={"path": "json", "data_files": str(data), "text_field": "body"}, token_budget=4096)
    documents = stream_documents(config)
    assert type(documents).__name__ == "IterableDataset"
    assert next(iter(documents)) == {"text": "doc 0 " * 5}
    blocks = list(pack_stream(documents, CharTokenizer(), 64, token_budget=256))
    assert len(blocks) == 4
    with pytest.raises(InputError, match="no column 'text'"):
        stream_documents(_config(dataset={"path": "json", "data_files": str(data)}, token_budget=4096))


def test_hub_dataset_needs_a_budget():
    with pytest.raises(ConfigError, match="token_budget"):
        _config(dataset={"path": "EleutherAI/proof-pile-2", "name": "arxiv"})
    assert _config(dataset={"path": "EleutherAI/proof-pile-2", "name": "arxiv"}, max_steps=5).max_steps == 5


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="rope_theta"):
        _config(rope_theta=None)
    with pytest.raises(ConfigError, match="rope_scaling"):
        _config(rope_scaling="ntk")
    with pytest.raises(ConfigError, match="block_size"):
        _config(block_size=8192)
    with pytest.raises(ConfigError, match="cpt.lora_rank"):
        build(CPTConfig, {"lora_rank": 8, "rope_scaling": "none"}, where="cpt")


def _local_texts(paths):
    return [row["text"] for row in stream_documents(_config(corpus=[str(p) for p in paths]))]


def test_local_corpus_streams_text_and_jsonl():
    documents = _local_texts([CORPUS])
    assert len(documents) == 2 + 6  # two text files, six JSONL rows
    assert any("平方完成" in d for d in documents) and any("mean value theorem" in d for d in documents)


def test_local_corpus_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="not found"):
        _local_texts([tmp_path / "missing.txt"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": "x"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl:1: missing required field\(s\) text"):
        _local_texts([bad])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no corpus files"):
        _local_texts([tmp_path / "empty"])


def _llama_config(**kwargs):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=2048, rope_theta=10000.0,
                       **kwargs)


def test_abf_raises_the_rope_base_and_the_window():
    model_config = _llama_config()
    summary = extend_context(model_config, _config(context_length=16384, rope_theta=500000.0))
    assert model_config.rope_parameters["rope_theta"] == 500000.0
    assert model_config.max_position_embeddings == 16384
    assert summary == {"rope_type": "default", "rope_theta": 500000.0, "max_position_embeddings": 16384}


def test_yarn_sets_factor_over_the_original_window():
    model_config = _llama_config()
    extend_context(model_config, _config(context_length=16384, rope_scaling="yarn", rope_theta=None))
    rope = model_config.rope_parameters
    assert rope["rope_type"] == "yarn" and rope["factor"] == 8.0
    assert rope["original_max_position_embeddings"] == 2048 and rope["rope_theta"] == 10000.0
    assert model_config.max_position_embeddings == 16384


def test_none_leaves_rope_alone():
    model_config = _llama_config()
    extend_context(model_config, _config(rope_scaling="none", rope_theta=None, context_length=512))
    assert model_config.max_position_embeddings == 2048 and model_config.rope_parameters["rope_theta"] == 10000.0


@pytest.mark.slow
@pytest.mark.parametrize("scaling", ["abf", "yarn"])
def test_forward_pass_at_the_full_extended_context(tmp_path, scaling):
    import torch

    from ftllm.tiny import build_tiny_model
    from ftllm.train.cpt import load_extended_model

    model_dir = build_tiny_model(tmp_path / "tiny2", layers=2)
    config = _config(context_length=16384, rope_scaling=scaling, rope_theta=500000.0 if scaling == "abf" else None,
                     dtype="float32")
    model, _, context = load_extended_model(model_dir, config)
    assert context["max_position_embeddings"] == 16384
    ids = torch.randint(0, model.config.vocab_size, (1, 16384))
    with torch.no_grad():
        logits = model(ids, use_cache=False, logits_to_keep=64).logits
    assert logits.shape == (1, 64, model.config.vocab_size)
    assert torch.isfinite(logits).all()


def _kill_at(step):
    """A Trainer callback that dies right after checkpoint `step` is written, like a preempted job."""
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise KeyboardInterrupt(f"killed at step {step}")

    return Kill()


@pytest.mark.slow
def test_training_resumes_after_a_kill_and_merges(tiny_model, tmp_path):
    import torch
    from safetensors.torch import load_file

    from ftllm.models import load_model
    from ftllm.train.cpt import train_cpt

    config = _config(block_size=64, lora_r=4, lora_alpha=8.0, max_steps=4, per_device_batch_size=2,
                     gradient_accumulation_steps=1, bf16=False, dtype="float32", save_steps=1, learning_rate=1e-3)
    out, checkpoints = tmp_path / "cpt", tmp_path / "checkpoints"
    with pytest.raises(KeyboardInterrupt):
        train_cpt(config, tiny_model, out, checkpoints, callbacks=(_kill_at(2),))
    assert (checkpoints / "checkpoint-2").is_dir() and not out.exists()

    metrics_path, loss_path = tmp_path / "metrics.json", tmp_path / "loss.json"
    metrics = train_cpt(config, tiny_model, out, checkpoints, metrics_path, loss_path)
    assert metrics["resumed_from_step"] == 2 and metrics["steps"] == 4
    assert metrics["tokens_seen"] == 4 * 2 * 64 and metrics["max_position_embeddings"] == 4096
    # the history of the killed run comes back with its checkpoint, so the plot has every step
    assert [row["step"] for row in json.loads(loss_path.read_text())] == [1, 2, 3, 4]
    assert json.loads(metrics_path.read_text())["final_loss"] == metrics["final_loss"]

    weights = load_file(out / "model.safetensors")
    assert not any("lora" in key or "magnitude" in key for key in weights)  # merged, plain checkpoint
    saved = json.loads((out / "config.json").read_text())
    assert saved["rope_parameters"]["rope_theta"] == 40000.0 and saved["max_position_embeddings"] == 4096
    base, _ = load_model(tiny_model, dtype="float32")
    trained, _ = load_model(out, dtype="float32")
    name = "model.layers.0.mlp.gate_proj.weight"
    assert not torch.equal(base.state_dict()[name], trained.state_dict()[name])
    # resuming restored adapters, optimizer and data order: same weights as a run never killed
    train_cpt(config, tiny_model, tmp_path / "straight", tmp_path / "straight-checkpoints")
    straight, _ = load_model(tmp_path / "straight", dtype="float32")
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(trained.state_dict()[key], value, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_changed_config_does_not_resume_stale_checkpoints(tiny_model, tmp_path):
    from ftllm.train.cpt import train_cpt

    config = _config(block_size=64, lora_r=4, max_steps=2, per_device_batch_size=2, gradient_accumulation_steps=1,
                     bf16=False, dtype="float32", save_steps=1, use_dora=False)
    train_cpt(config, tiny_model, tmp_path / "a", tmp_path / "ck")
    other = _config(block_size=32, lora_r=4, max_steps=2, per_device_batch_size=2, gradient_accumulation_steps=1,
                    bf16=False, dtype="float32", save_steps=1, use_dora=False)
    assert train_cpt(other, tiny_model, tmp_path / "b", tmp_path / "ck")["resumed_from_step"] == 0


@pytest.mark.slow
@pytest.mark.parametrize(("budget", "steps"), [(None, 5), (2048, 2)])
def test_streamed_corpus_sets_the_steps(tiny_model, tmp_path, budget, steps):
    """No max_steps: a token budget, or else one counted pass over the stream, decides how long CPT trains."""
    from ftllm.train.cpt import train_cpt

    # assets/corpus: 5,547 tokens of the tiny tokenizer -> 10 blocks of 512, 5 steps of 2 blocks
    config = _config(block_size=512, lora_r=4, lora_alpha=8.0, per_device_batch_size=2, gradient_accumulation_steps=1,
                     bf16=False, dtype="float32", save_steps=100, token_budget=budget)  # fmt: skip
    metrics = train_cpt(config, tiny_model, tmp_path / "cpt", tmp_path / "ck")
    assert metrics["steps"] == steps and metrics["tokens_seen"] == steps * 2 * 512
