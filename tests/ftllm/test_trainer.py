"""ftllm.train.trainer: the `gradient_checkpointing: auto` memory rule."""
from __future__ import annotations

from transformers import LlamaConfig

from ftllm.train.trainer import _parameter_count, needs_checkpointing

H200 = 141 * 2**30
UPSCALED_12B = LlamaConfig(hidden_size=4096, num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=8,
                           intermediate_size=14336, vocab_size=99584)  # llm-jp-4-8B grown to 48 layers
LLAMA_1B = LlamaConfig(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                       intermediate_size=8192, vocab_size=128256)


def test_parameter_count_matches_the_model():
    import torch
    from transformers import LlamaForCausalLM

    config = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=96, vocab_size=300, tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    assert _parameter_count(config) == sum(p.numel() for p in model.parameters())


def test_checkpoint_only_where_memory_needs_it():
    # a 1B model on two 16k packs fits an H200 without recomputation, even on one GPU
    assert not needs_checkpointing(LLAMA_1B, 2 * 16384, 1, H200)
    # the up-scaled 12B on a 16k pack does not, even with its states sharded over 8 GPUs
    assert needs_checkpointing(UPSCALED_12B, 16384, 8, H200)
    # short micro-batches of the 12B fit once its states are sharded, but not all on one card
    assert not needs_checkpointing(UPSCALED_12B, 2048, 8, H200)
    assert needs_checkpointing(UPSCALED_12B, 2048, 1, H200)
    # frozen weights (DoRA in cpt) need no optimizer state
    assert not needs_checkpointing(UPSCALED_12B, 2048, 1, H200, trains_all=False)
