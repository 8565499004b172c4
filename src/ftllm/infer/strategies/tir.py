"""Tool-integrated reasoning: the model writes Python, the sandbox runs it, the output goes back.

Each trace is generated with a stop on the output fence ("```output", as Qwen2.5-Math's
evaluation does). The first complete ```python block not yet run is cut out of the text
(anything the model wrote after its closing fence, such as an invented output, is dropped),
run in `ftllm.infer.sandbox`, and the trace continues after

    ```output
    <stdout, or the error's last line>
    ```

until the model stops without new code, `max_calls` blocks have run, or the trace has used
`config.sampling.max_new_tokens` tokens in total. Earlier blocks of the same trace are re-run
silently before a new one, so variables persist from block to block as in a notebook.
`config.sampling.n` traces per problem are voted.
"""
from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

from ftllm.engine import Completion
from ftllm.infer.sandbox import SandboxLimits, require_sandbox, run_code
from ftllm.infer.strategies.base import (
    Stopwatch,
    StrategyResult,
    add_logprob,
    continue_traces,
    problem_chat,
    render_text,
    round_seed,
    voted_results,
)

INSTRUCTION = (
    "Please integrate natural language reasoning with Python programs to solve the problem above: "
    "write code in ```python blocks, its printed output will be shown to you in an ```output block. "
    "Put your final answer within \\boxed{}."
)


@dataclasses.dataclass(frozen=True)
class TIRConfig:
    """YAML keys under `predict.tir`."""

    max_calls: int = 4  # code blocks run per trace
    instruction: str = INSTRUCTION  # appended to the problem's user turn ("" to leave the prompt as is)
    code_start: str = "```python"
    code_end: str = "```"
    output_start: str = "```output"
    workers: int = 4  # sandboxes running at once
    sandbox: SandboxLimits = SandboxLimits()

    def __post_init__(self) -> None:
        if self.max_calls < 0:
            raise ValueError(f"tir.max_calls must be >= 0, got {self.max_calls}")
        if self.workers < 1:
            raise ValueError(f"tir.workers must be >= 1, got {self.workers}")
        if not (self.code_start and self.code_end and self.output_start):
            raise ValueError("tir.code_start, tir.code_end and tir.output_start must not be empty")


@dataclasses.dataclass
class _Trace:
    problem: int
    text: str = ""
    tokens: int = 0
    calls: int = 0
    scanned: int = 0  # code before this offset has been run (or belongs to the prompt)
    cells: list[str] = dataclasses.field(default_factory=list)
    pending: str | None = None  # a code block waiting for the sandbox
    done: bool = False
    last: Completion | None = None
    logprob: float | None = 0.0  # summed over every sampled continuation (tool output is not sampled)


def find_code_block(text: str, start: int, config: TIRConfig) -> tuple[str, int] | None:
    """The first complete code block at or after `start`: (code, offset just past its closing fence)."""
    begin = text.find(config.code_start, start)
    if begin < 0:
        return None
    body = begin + len(config.code_start)
    end = text.find(config.code_end, body)
    if end < 0:
        return None
    return text[body:end].strip("\n"), end + len(config.code_end)


def build_program(cells: list[str], code: str) -> str:
    """`code` preceded by the trace's earlier cells, re-run silently so their variables exist."""
    prelude = [
        "import contextlib as _tir_c, io as _tir_io\n"
        f"with _tir_c.redirect_stdout(_tir_io.StringIO()):\n    try:\n        exec({cell!r})\n"
        "    except Exception:\n        pass\n"
        for cell in cells
    ]
    return "".join(prelude) + code


def run_tir(engine, problems: list[dict], config) -> list[StrategyResult]:
    """Tool-integrated reasoning under `config.tir`, `config.sampling.n` traces per problem."""
    require_sandbox()  # before any generation is spent: model code never runs unconfined
    tir: TIRConfig = config.tir
    chats = [_with_instruction(problem_chat(row, config), tir.instruction) for row in problems]
    prefixes = [render_text(engine, chat, config) for chat in chats]
    budget = config.sampling.max_new_tokens
    watch = Stopwatch(len(problems))
    # special tokens stay in the text: the trace is fed back as a prompt and must keep the
    # template's markers (harmony channels) exactly as generated
    sampling = dataclasses.replace(
        config.sampling, stop=(*config.sampling.stop, tir.output_start), skip_special_tokens=False
    )
    everyone = list(range(len(problems)))

    start = watch.clock()
    traces = []
    for i, completions in enumerate(engine.generate(prefixes, sampling)):
        for c in completions:
            traces.append(_Trace(i))
            _take(traces[-1], c, tir, budget)
    watch.charge(everyone, start)
    step = 0
    with ThreadPoolExecutor(tir.workers) as pool:
        while True:
            start = watch.clock()
            waiting = [t for t in traces if t.pending is not None]
            programs = [build_program(t.cells, t.pending) for t in waiting]
            for t, result in zip(waiting, pool.map(lambda code: run_code(code, tir.sandbox), programs)):
                t.text += f"\n{tir.output_start}\n{result.output.rstrip()}\n{tir.code_end}\n"
                t.scanned = len(t.text)
                t.cells.append(t.pending)
                t.pending = None
                t.calls += 1
            going = [t for t in traces if not t.done]
            if not going:
                watch.charge(sorted({t.problem for t in waiting}), start)
                break
            step += 1
            continue_traces(
                engine, going, lambda t: prefixes[t.problem] + t.text, sampling, budget, round_seed(config, step),
                lambda t, c: _take(t, c, tir, budget),
            )  # no watch: the round, sandbox runs included, is charged as a whole below
            watch.charge(sorted({t.problem for t in waiting + going}), start)
    return _results(traces, problems, config, watch)


def _with_instruction(chat: list[dict], instruction: str) -> list[dict]:
    chat = [dict(message) for message in chat]
    if instruction:
        chat[-1]["content"] = chat[-1]["content"].rstrip() + "\n\n" + instruction
    return chat


def _take(trace: _Trace, completion: Completion, tir: TIRConfig, budget: int) -> None:
    """Add a continuation to a trace and decide whether a code block runs next or the trace ends."""
    trace.tokens += completion.num_tokens
    trace.last = completion
    trace.logprob = add_logprob(trace.logprob, completion)
    text = trace.text + completion.text
    block = find_code_block(text, trace.scanned, tir)
    if block and trace.calls < tir.max_calls and trace.tokens < budget:
        code, end = block
        trace.text, trace.pending = text[:end], code
    else:
        trace.text, trace.done = text, True


def _results(traces: list[_Trace], problems: list[dict], config, watch: Stopwatch) -> list[StrategyResult]:
    samples: list[list[Completion]] = [[] for _ in problems]
    tokens = [0] * len(problems)
    calls = [0] * len(problems)
    for t in traces:
        samples[t.problem].append(Completion(
            text=t.text, num_tokens=t.tokens, cumulative_logprob=t.logprob if t.last else None,
            finish_reason=t.last.finish_reason if t.last else "stop",
        ))
        tokens[t.problem] += t.tokens
        calls[t.problem] += t.calls
    return voted_results(samples, tokens, problems, config, watch, [{"code_calls": n} for n in calls])
