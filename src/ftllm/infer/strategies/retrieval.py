"""Retrieval of similar solved problems as few-shot examples (multilingual-e5 embeddings).

The judged training set (problems with their checked worked solutions) is embedded once
with an E5 encoder: indexed problems get the `passage: ` prefix, the test problem the
`query: ` prefix (`symmetric: true` uses `query: ` on both), and each text becomes the mean
of its last hidden states over the attention mask, L2-normalised, so a dot product is the
cosine similarity. The `top_k` nearest solved problems go into the chat as earlier
user/assistant turns; then the problem is sampled `config.sampling.n` times and voted as in
plain self-consistency.

The encoder path comes from params (the e5 weights are bundled with the models: no hub
access at prediction time). Tests use the tiny random model as the encoder, so only the
mechanics are checked there, not the quality of the neighbours.
"""
from __future__ import annotations

import dataclasses

from ftllm.infer.strategies.base import (
    EMPTY_OUTPUT,
    Stopwatch,
    StrategyResult,
    break_ties,
    chat_prompts,
    problem_chat,
    vote_problems,
)


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    """YAML keys under `predict.retrieval`."""

    encoder: str = "models/multilingual-e5-base"  # folder of an E5 encoder
    index: str = "data/judged/kept.parquet"  # solved problems (jsonl / parquet / folder of them)
    top_k: int = 3
    problem_field: str = "problem"
    solution_field: str = "solution"  # the worked solution shown as the example's answer
    answer_field: str | None = "answer"  # appended as \boxed{answer} when the solution lacks a box; null: never
    symmetric: bool = False  # "query: " on both sides instead of query/passage
    max_length: int = 512  # E5 reads at most 512 tokens
    batch_size: int = 32
    max_example_chars: int = 3000  # longer solutions are cut (keeping the prompt within the context)
    max_index_rows: int = 0  # 0: the whole index; else the first N rows (demo, tests)
    device: str = "auto"  # auto: cuda when available (e5-base needs ~1 GB beside vLLM), else cpu

    def __post_init__(self) -> None:
        if self.top_k < 0:
            raise ValueError(f"retrieval.top_k must be >= 0, got {self.top_k}")
        if self.max_length < 8 or self.batch_size < 1:
            raise ValueError("retrieval.max_length must be >= 8 and retrieval.batch_size >= 1")


class Encoder:
    """E5-style sentence embeddings: mean pooling over the attention mask, then L2 norm."""

    def __init__(self, path: str, max_length: int = 512, batch_size: int = 32, device: str = "auto"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from ftllm.io import InputError

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path).eval()
        except OSError as err:
            raise InputError(f"{path}: cannot load an encoder there ({str(err).splitlines()[0]})") from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # right padding: a causal encoder (the tests' tiny Llama) then sees real tokens unshifted
        self.tokenizer.padding_side = "right"
        self.max_length, self.batch_size = max_length, batch_size
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(device)

    def encode(self, texts: list[str]):
        """(len(texts), hidden) float tensor of unit vectors."""
        import torch

        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.model.device)
                hidden = self.model(**batch).last_hidden_state
                chunks.append(mean_pool(hidden, batch["attention_mask"]).cpu())
        if not chunks:
            return torch.zeros((0, self.model.config.hidden_size))
        return torch.cat(chunks)


def mean_pool(hidden, mask):
    """Average of the hidden states where `mask` is 1, scaled to unit length."""
    import torch

    mask = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    mean = summed / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean.float(), p=2, dim=-1)


def nearest(queries, passages, k: int) -> list[list[int]]:
    """Indices of the `k` most similar passages per query (cosine: the vectors are unit length)."""
    import torch

    if k == 0 or passages.shape[0] == 0:
        return [[] for _ in range(queries.shape[0])]
    scores = queries @ passages.T
    return torch.topk(scores, k=min(k, passages.shape[0]), dim=1).indices.tolist()


def load_index(config: RetrievalConfig) -> list[dict]:
    from ftllm.io import read_records

    rows = read_records(config.index)
    rows = [r for r in rows if r.get(config.problem_field) and r.get(config.solution_field)]
    return rows[: config.max_index_rows] if config.max_index_rows else rows


def example_turns(example: dict, config, retrieval: RetrievalConfig) -> list[dict]:
    """One solved problem as a user turn (the predict prompt) and an assistant turn (its solution)."""
    problem = str(example[retrieval.problem_field])
    solution = str(example[retrieval.solution_field])[: retrieval.max_example_chars]
    answer = example.get(retrieval.answer_field) if retrieval.answer_field else None
    if answer not in (None, "") and "\\boxed" not in solution:
        solution = f"{solution.rstrip()}\n\n\\boxed{{{answer}}}"
    user = problem_chat({"problem": problem}, config)[-1]
    return [user, {"role": "assistant", "content": solution}]


def few_shot_chat(row: dict, examples: list[dict], config, retrieval: RetrievalConfig) -> list[dict]:
    """The problem's chat with the examples as earlier turns (after the system turn, if any)."""
    chat = problem_chat(row, config)
    head = [m for m in chat[:-1] if m["role"] == "system"]
    shots = [turn for example in examples for turn in example_turns(example, config, retrieval)]
    return head + shots + [m for m in chat[:-1] if m["role"] != "system"] + chat[-1:]


def retrieve(problems: list[dict], retrieval: RetrievalConfig, index: list[dict] | None = None) -> list[list[dict]]:
    """The `top_k` solved rows most similar to each problem."""
    index = load_index(retrieval) if index is None else index
    encoder = Encoder(retrieval.encoder, retrieval.max_length, retrieval.batch_size, retrieval.device)
    passage_prefix = "query: " if retrieval.symmetric else "passage: "
    passages = encoder.encode([passage_prefix + str(r[retrieval.problem_field]) for r in index])
    queries = encoder.encode(["query: " + str(r["problem"]) for r in problems])
    return [[index[j] for j in hits] for hits in nearest(queries, passages, retrieval.top_k)]


def run_retrieval(engine, problems: list[dict], config, index: list[dict] | None = None) -> list[StrategyResult]:
    """Few-shot self-consistency with retrieved examples under `config.retrieval`."""
    retrieval: RetrievalConfig = config.retrieval
    watch = Stopwatch(len(problems))
    everyone = list(range(len(problems)))
    start = watch.clock()
    neighbours = retrieve(problems, retrieval, index)
    chats = [few_shot_chat(row, shots, config, retrieval) for row, shots in zip(problems, neighbours)]
    template_kwargs = dict(config.prompt.chat_template_kwargs)
    samples = engine.chat(chats, config.sampling, **template_kwargs)
    votes = break_ties(engine, chat_prompts(engine, chats, template_kwargs), samples,
                       vote_problems(samples, problems, config))
    watch.charge(everyone, start)
    return [
        StrategyResult(
            votes[i].output or EMPTY_OUTPUT,
            list(samples[i]),
            sum(c.num_tokens for c in samples[i]),
            watch.seconds[i],
            {"vote": votes[i], "examples": [str(e.get("id", "")) for e in neighbours[i]]},
        )
        for i in range(len(problems))
    ]
