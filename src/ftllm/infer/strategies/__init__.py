"""Inference strategies beyond plain self-consistency, each `(engine, problems, config) -> list[StrategyResult]`.

| name | module | what it spends compute on |
|---|---|---|
| `rsa` | `rsa.py` | recursive self-aggregation of a population of solutions |
| `s1` | `s1.py` | budget forcing: longer thinking via "Wait" |
| `tir` | `tir.py` | Python code blocks run in `ftllm.infer.sandbox` |
| `retrieval` | `retrieval.py` | similar solved problems as few-shot examples |
| `budget` | `ftllm.infer.budget` | adaptive self-consistency under one wall-clock budget |

The predict stage picks one by name (`predict.strategy`) from `STRATEGIES`, the one registry;
each reads its own block of the predict config (`predict.rsa`, `predict.s1`, ...).
"""
from ftllm.infer.strategies.base import EMPTY_OUTPUT, StrategyResult

# name -> "module:function", imported when chosen (retrieval pulls in an encoder, tir the sandbox)
STRATEGIES: dict[str, str] = {
    "sc": "ftllm.infer.predict:run_sc",
    "rsa": "ftllm.infer.strategies.rsa:run_rsa",
    "s1": "ftllm.infer.strategies.s1:run_s1",
    "tir": "ftllm.infer.strategies.tir:run_tir",
    "retrieval": "ftllm.infer.strategies.retrieval:run_retrieval",
    "budget": "ftllm.infer.budget:run_budget",
}

__all__ = ["EMPTY_OUTPUT", "STRATEGIES", "StrategyResult"]
