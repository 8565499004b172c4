"""transformers `generate` backend: slow but dependency-light (tests, machines without vLLM)."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ftllm.config import EngineSpec, SamplingSpec
from ftllm.engine.base import Completion, Engine


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
    def generate_ids(self, prompts: list[list[int]], sampling: SamplingSpec) -> list[list[Completion]]:
        seed = sampling.seed if sampling.seed is not None else self.spec.seed
        torch.manual_seed(seed)
        results: list[list[Completion]] = []
        step = max(1, self.spec.batch_size)
        for start in tqdm(range(0, len(prompts), step), desc="hf generate", disable=len(prompts) <= step):
            results.extend(self._batch(prompts[start : start + step], sampling))
        return results

    def _batch(self, prompts: list[list[int]], sampling: SamplingSpec) -> list[list[Completion]]:
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.model.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.model.device)
        do_sample = sampling.temperature > 0
        kwargs = dict(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=do_sample,
            num_return_sequences=sampling.n,
            pad_token_id=pad,
            return_dict_in_generate=True,
            output_scores=True,
        )
        if do_sample:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        out = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        new_tokens = out.sequences[:, width:]
        scores = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
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
            text, stopped = _cut_at_stop(text, sampling.stop)
            logprob = float(row_scores[: len(ids)].float().sum()) if ids else 0.0
            completions.append(Completion(text, len(ids), logprob, "stop" if stopped else finish))
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
