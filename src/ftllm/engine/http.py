"""OpenAI-compatible HTTP backend: an already running `vllm serve` (or any `/v1/completions` server).

Prompts are rendered to token ids locally with the model's own tokenizer (the same
ids every backend sees) and sent as token-id prompts to `/v1/completions`, one request
per prompt carrying `n` (and `logprobs` when `sampling.logprobs` asks for `cumulative_logprob`).

Requests run in a thread pool of `spec.max_concurrency`; a failed request (connection
error, timeout after `spec.request_timeout_s`, HTTP 408/409/429/5xx) is retried up to
`spec.max_retries` times with exponential backoff. The API key is read from the
environment variable named by `spec.api_key_env` and only ever put in the header.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from tqdm.auto import tqdm

from ftllm.config import EngineSpec, SamplingSpec
from ftllm.engine.base import Completion, Engine, OnFinished
from ftllm.io import strip_controls

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5  # first retry waits ~0.5 s, then 1, 2, 4 … (with jitter so workers spread out)
BACKOFF_MAX_S = 30.0
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class EngineError(RuntimeError):
    """The server could not give an answer (after retries, or a request it refuses)."""


class HTTPEngine(Engine):
    def __init__(self, spec: EngineSpec):
        import httpx
        from transformers import AutoTokenizer

        self.spec = spec
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model)
        self.url = spec.base_url.rstrip("/") + "/completions"
        headers = {}
        key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(max_connections=spec.max_concurrency, max_keepalive_connections=spec.max_concurrency)
        self.client = httpx.Client(headers=headers, timeout=spec.request_timeout_s, limits=limits)

    def request_body(self, prompt: list[int], sampling: SamplingSpec) -> dict:
        body = {
            "model": self.spec.model,
            "prompt": prompt,
            "n": sampling.n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
            "skip_special_tokens": sampling.skip_special_tokens,  # vLLM extension
        }
        if sampling.logprobs:
            body["logprobs"] = 1  # token_logprobs then holds the sampled tokens' log-probabilities
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        return body

    def generate_ids(
        self, prompts: list[list[int]], sampling: SamplingSpec, on_finished: OnFinished | None = None,
        seeds=None,
    ) -> list[list[Completion]]:
        workers = max(1, min(self.spec.max_concurrency, len(prompts)))
        per_prompt = [sampling] * len(prompts) if seeds is None else [
            dataclasses.replace(sampling, seed=int(s)) for s in seeds]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(self._complete, p, s): p for p, s in zip(prompts, per_prompt)}
            for future in tqdm(as_completed(futures), total=len(futures), desc="http generate",
                               disable=len(prompts) < 8):
                if on_finished:
                    on_finished(futures[future], future.result())
            return [f.result() for f in futures]  # dicts keep insertion order: prompt order

    def _complete(self, prompt: list[int], sampling: SamplingSpec) -> list[Completion]:
        data = self._post(self.request_body(prompt, sampling))
        choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != sampling.n:
            raise EngineError(f"{self.url}: expected {sampling.n} choices, got {len(choices)}")
        return [self._completion(choice) for choice in choices]

    def _completion(self, choice: dict) -> Completion:
        text = strip_controls(choice.get("text") or "")
        logprobs = choice.get("logprobs") or {}
        token_logprobs = [lp for lp in (logprobs.get("token_logprobs") or []) if lp is not None]
        tokens = logprobs.get("tokens")
        if tokens is not None:
            num_tokens = len(tokens)
        else:
            num_tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return Completion(
            text=text,
            num_tokens=num_tokens,
            cumulative_logprob=float(sum(token_logprobs)) if token_logprobs else None,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        )

    def _post(self, body: dict) -> dict:
        import httpx

        last = ""
        for attempt in range(self.spec.max_retries + 1):
            if attempt:
                delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1)) * (1 + random.random() / 2)
                log.warning("retry %d/%d of %s in %.1fs (%s)", attempt, self.spec.max_retries, self.url, delay, last)
                time.sleep(delay)
            try:
                response = self.client.post(self.url, json=body)
            except httpx.TimeoutException:
                last = f"no answer within {self.spec.request_timeout_s}s"
                continue
            except httpx.TransportError as err:
                last = f"connection failed: {type(err).__name__}"
                continue
            if response.status_code in _RETRY_STATUS:
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code != 200:
                raise EngineError(f"{self.url}: HTTP {response.status_code}: {response.text[:300]}")
            return response.json()
        raise EngineError(f"{self.url}: gave up after {self.spec.max_retries + 1} attempts ({last})")

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
            self.client = None
