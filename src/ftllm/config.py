"""Typed views of `params.yaml`: one frozen dataclass per stage section.

Field names are the YAML keys. Loading is strict: an unknown key, a missing
required key or a value of the wrong shape raises `ConfigError` naming the
dotted key, so a typo in params.yaml fails before any model loads.

    cfg = load_section("params.yaml", "sft", SFTConfig)
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A params file does not match the dataclass it feeds."""


def _build(cls: Any, value: Any, where: str) -> Any:
    """Turn plain YAML data into `cls`, recursing into dataclasses, lists and optionals."""
    origin = typing.get_origin(cls)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(cls) if a is not type(None)]
        if value is None:
            return None
        return _build(args[0], value, where)
    if dataclasses.is_dataclass(cls):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(where + '.' + k for k in unknown)}")
        kwargs = {}
        for name, field in fields.items():
            key = f"{where}.{name}"
            if name in value:
                kwargs[name] = _build(hints[name], value[name], key)
            elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: required key is missing")
        try:
            built = cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from err
        check_ranges(built, where)
        return built
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(cls)[:1] or (Any,)
        built = [_build(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(built)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if cls is Any:
        return value
    if cls is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if cls is float:
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if cls in (int, str, bool) and not isinstance(value, cls):
        raise ConfigError(f"{where}: expected {cls.__name__}, got {value!r}")
    if cls is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected int, got {value!r}")
    return value


# Ranges every config obeys, by field name wherever the field sits (one rule, every stage's section).
# A field holding None (an optional "auto") is not checked.
RANGES: dict[str, tuple[str, Any]] = {
    "temperature": (">=", 0),
    "top_p": (">", 0),
    "workers": (">=", 0),
    "max_model_len": (">", 0),
    "batch_size": (">", 0),
}


def _range_rule(name: str) -> tuple[str, Any] | None:
    if name in RANGES:
        return RANGES[name]
    if name.endswith("_workers"):
        return RANGES["workers"]
    if name.endswith("temperature"):
        return RANGES["temperature"]
    if name.endswith("timeout_s"):
        return (">", 0)
    return None


def check_ranges(config: Any, where: str) -> None:
    """Raise ConfigError naming the dotted key when a numeric field breaks its rule in RANGES."""
    for field in dataclasses.fields(config):
        rule = _range_rule(field.name)
        value = getattr(config, field.name)
        if rule is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        op, bound = rule
        if not (value >= bound if op == ">=" else value > bound):
            raise ConfigError(f"{where}.{field.name}: must be {op} {bound}, got {value!r}")
        if field.name == "top_p" and value > 1:
            raise ConfigError(f"{where}.top_p: must be <= 1, got {value!r}")


def read_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: params file not found")
    try:
        with path.open(encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}{line}: YAML syntax error ({problem})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of stage sections")
    return data


def load_section(path: str | Path, section: str, cls: type[T]) -> T:
    """Read `section` of the params file at `path` into the dataclass `cls`."""
    data = read_params(path)
    if section not in data:
        raise ConfigError(f"{path}: section '{section}' is missing")
    return _build(cls, data[section], section)


def build(cls: type[T], value: dict, where: str = "config") -> T:
    """Build a config from a dict (tests, programmatic use) with the same checks as params.yaml."""
    return _build(cls, value, where)


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


# ---------------------------------------------------------------------------
# Shared blocks, composed into stage configs as fields (never inherited).

@dataclasses.dataclass(frozen=True)
class EngineSpec:
    """Which generation backend runs a model, and how."""

    model: str  # checkpoint folder or hub id
    backend: str = "vllm"  # vllm | hf | http
    dtype: str = "auto"  # auto | bfloat16 | float32 ...
    max_model_len: int = 4096
    seed: int = 0
    # vLLM only
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    # the engine core in this process, not a spawned one: saves the spawned process's imports (~20 s a stage on
    # an H200 box) at the cost of overlapping scheduling with the GPU; for short-lived engines on small models
    in_process: bool = False
    # hf only: prompts per forward pass
    batch_size: int = 8
    # http only: an OpenAI-compatible server (`vllm serve`) already running
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"  # name of the env var holding the key, never the key
    max_concurrency: int = 32
    request_timeout_s: float = 600.0
    max_retries: int = 5
    chat_template: str | None = None  # path to a jinja template overriding the tokenizer's

    def __post_init__(self) -> None:
        if self.backend not in ("vllm", "hf", "http"):
            raise ValueError(f"backend must be vllm, hf or http, got {self.backend!r}")


@dataclasses.dataclass(frozen=True)
class SamplingSpec:
    """Sampling parameters understood by every backend."""

    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int | None = None
    stop: list[str] = dataclasses.field(default_factory=tuple)
    skip_special_tokens: bool = True
    # each sample's summed log-probability (`Completion.cumulative_logprob`); vLLM then builds a
    # Python object per sampled token, which at n=160 doubled predict's wall time on an H100
    logprobs: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


# Where each params.yaml section's dataclass lives: stage -> "module:Class".
# Domain modules own their configs so they stay next to the code that reads them.
SECTIONS: dict[str, str] = {
    "base": "ftllm.models:BaseConfig",
    "baseline": "ftllm.models:BaseConfig",
    "teacher": "ftllm.models:BaseConfig",
    "evalset": "ftllm.evalset:EvalsetConfig",
    "generate": "ftllm.generate:GenerateConfig",
    "judge": "ftllm.judge:JudgeConfig",
    "cpt": "ftllm.train.cpt:CPTConfig",
    "upscale": "ftllm.upscale:UpscaleConfig",
    "sft": "ftllm.train.sft:SFTConfig",
    "rl": "ftllm.train.rl:RLConfig",
    "predict": "ftllm.infer:PredictConfig",
    "evaluate": "ftllm.evaluate:EvaluateConfig",
    "prompt": "ftllm.prompting:PromptSpec",
}

# Top-level sections that several stages read: a stage dataclass with a field of this name gets the
# top-level section (unless its own section sets one), so e.g. sft, rl and predict share one `prompt`.
SHARED_SECTIONS = ("prompt",)


def load_attr(spec: str) -> Any:
    """`"package.module:name"` -> the object, imported on first use (so `--help` never loads torch)."""
    import importlib

    module, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"{spec!r}: expected 'module:attribute'")
    return getattr(importlib.import_module(module), name)


def section_class(section: str) -> type:
    return load_attr(SECTIONS[section])


def load_stage(path: str | Path, section: str):
    """Load a stage's section into its registered dataclass, shared sections (SHARED_SECTIONS) filled in."""
    cls = section_class(section)
    data = read_params(path)
    if section not in data:
        raise ConfigError(f"{path}: section '{section}' is missing")
    value = data[section]
    names = {f.name for f in dataclasses.fields(cls)}
    if isinstance(value, dict):
        shared = {k: data[k] for k in SHARED_SECTIONS if k in names and k in data and k not in value and k != section}
        value = {**value, **shared}
    return _build(cls, value, section)
