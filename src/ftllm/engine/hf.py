"""transformers `generate` backend: slow but dependency-light (tests, machines without vLLM)."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ftllm.config import EngineSpec, SamplingSpec
from ftllm.engine.base import Completion, Engine, OnFinished
from ftllm.io import strip_controls


class HFEngine(Engine):
    def __init__(self, spec: EngineSpec):
        from ftllm.models import load_model

        self.spec = spec
        self.model, self.tokenizer = load_model(spec.model, dtype=spec.dtype)
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @torch.inference_mode()
    def generate_ids(
        self, prompts: list[list[int]], sampling: SamplingSpec, on_finished: OnFinished | None = None,
        seeds=None,
    ) -> list[list[Completion]]:
        seed = sampling.seed if sampling.seed is not None else self.spec.seed
        torch.manual_seed(seed)

        # the seeds of the prompts within_length lets through, in the same order
        fitting_seeds = None if seeds is None else [
            request_seed for prompt, request_seed in zip(prompts, seeds) if len(prompt) < self.spec.max_model_len]

        def generate(fitting: list[list[int]]) -> list[list[Completion]]:
            results: list[list[Completion]] = []
            # per-request seeds: one prompt per call, its own seed first. A shared batch would draw all
            # prompts' tokens from one generator, and left padding changes a prompt's logits slightly.
            step = 1 if fitting_seeds is not None else max(1, self.spec.batch_size)
            for start in tqdm(range(0, len(fitting), step), desc="hf generate", disable=len(fitting) <= step):
                if fitting_seeds is not None:
                    torch.manual_seed(int(fitting_seeds[start]))
                batch = self._batch(fitting[start : start + step], sampling)
                for prompt, completions in zip(fitting[start : start + step], batch) if on_finished else ():
                    on_finished(prompt, completions)
                results.extend(batch)
            return results

        return self.within_length(prompts, sampling, on_finished, generate)

    @torch.inference_mode()
    def score_ids(self, prompts: list[list[int]], continuations: list[list[int]]) -> list[float | None]:
        """A forward pass over prompt + continuation; the continuation tokens' log-probabilities summed."""
        scores: list[float | None] = []
        for prompt, continuation in zip(prompts, continuations):
            if not continuation:
                scores.append(None)
                continue
            ids = torch.tensor([prompt + continuation], device=self.model.device)
            logits = self.model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
            picked = torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(prompt) :, None])
            scores.append(float(picked.sum()))
        return scores

    def _batch(self, prompts: list[list[int]], sampling: SamplingSpec) -> list[list[Completion]]:
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.model.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.model.device)
        do_sample = sampling.temperature > 0
        kwargs = dict(
            # prompt + generation stay within max_model_len, as vLLM's do (within_length left room for one)
            max_new_tokens=min(sampling.max_new_tokens, self.spec.max_model_len - width),
            do_sample=do_sample,
            num_return_sequences=sampling.n,
            pad_token_id=pad,
            return_dict_in_generate=True,
            output_logits=True,  # raw logits: logprobs of the model itself, as vLLM reports them
        )
        if do_sample:
            # no top-k unless asked (vLLM's default; transformers would otherwise apply top_k=50)
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        out = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        new_tokens = out.sequences[:, width:]
        scores = self.model.compute_transition_scores(out.sequences, out.logits, normalize_logits=True)
        eos = set(_as_list(self.model.generation_config.eos_token_id)) | {self.tokenizer.eos_token_id}
        completions = []
        for row, row_scores in zip(new_tokens.tolist(), scores):
            ids = []
            finish = "length"
            for tok in row:
                if tok in eos:
                    finish = "stop"
                    break
                if tok == pad and pad not in eos:
                    finish = "stop"
                    break
                ids.append(tok)
            text = self.tokenizer.decode(ids, skip_special_tokens=sampling.skip_special_tokens)
            text, stopped = _cut_at_stop(strip_controls(text), sampling.stop)
            logprob = float(row_scores[: len(ids)].float().sum()) if ids else 0.0
            completions.append(Completion(text, len(ids), logprob, "stop" if stopped else finish, token_ids=ids))
        n = sampling.n
        return [completions[i * n : (i + 1) * n] for i in range(len(prompts))]


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _cut_at_stop(text: str, stops) -> tuple[str, bool]:
    """vLLM drops the stop string from the text; do the same here."""
    cut = [text.index(s) for s in stops if s in text]
    if not cut:
        return text, False
    return text[: min(cut)], True
