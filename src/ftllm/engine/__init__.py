"""One generation interface, three backends.

    engine = make_engine(EngineSpec(model="models/base", backend="vllm"))
    outs = engine.chat([[{"role": "user", "content": "1+1?"}]], SamplingSpec(n=4))
    outs[0][3].text  # the 4th sample for the first conversation

`generate`, `judge`, `predict` and the RL prompt filter all go through `Engine`, so a
backend swap is one line in params.yaml. Prompts are rendered to token ids with the
model's own chat template once, here, so every backend sees exactly the same input.
"""
from __future__ import annotations

from ftllm.config import EngineSpec
from ftllm.engine.base import Completion, Engine, render_chat


def make_engine(spec: EngineSpec) -> Engine:
    """Build the backend named by `spec.backend` (imports stay lazy: vLLM is heavy)."""
    if spec.backend == "vllm":
        from ftllm.engine.vllm import VLLMEngine

        return VLLMEngine(spec)
    if spec.backend == "hf":
        from ftllm.engine.hf import HFEngine

        return HFEngine(spec)
    from ftllm.engine.http import HTTPEngine

    return HTTPEngine(spec)


__all__ = ["Completion", "Engine", "make_engine", "render_chat"]
