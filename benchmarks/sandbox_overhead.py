"""Sandbox overhead per snippet: wall time of `run_code` for a trivial snippet and a sympy one,
against the same code in a plain `python -I -c` subprocess (what any process isolation costs).

    python benchmarks/sandbox_overhead.py [--repeats 20]

Writes benchmarks/results/sandbox_overhead.json (medians in milliseconds, with provenance).
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import click

SNIPPETS = {
    "print": "print(6 * 7)",
    "sympy": "import sympy\nprint(sympy.factor('x**2 - 1'))",
}


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)


@click.command(help=__doc__)
@click.option("--repeats", default=20, show_default=True, help="runs per snippet; the median is reported")
@click.option("--out", type=click.Path(path_type=Path), default="benchmarks/results/sandbox_overhead.json",
              show_default=True)
def main(repeats: int, out: Path) -> None:
    from ftllm.infer.sandbox import SandboxLimits, require_sandbox, run_code
    from ftllm.io import write_json
    from ftllm.provenance import provenance

    require_sandbox()
    limits = SandboxLimits(wall_timeout_s=60)
    result = {"repeats": repeats, "snippets": {}}
    for name, code in SNIPPETS.items():
        check = run_code(code, limits)
        if not check.ok:
            raise click.ClickException(f"snippet {name} failed in the sandbox: {check.output.strip()}")
        sandboxed = _median_ms(lambda code=code: run_code(code, limits), repeats)
        plain = _median_ms(
            lambda code=code: subprocess.run([sys.executable, "-c", code], capture_output=True, check=True), repeats)
        result["snippets"][name] = {"sandbox_ms": sandboxed, "plain_subprocess_ms": plain,
                                    "overhead_ms": round(sandboxed - plain, 1)}
        click.echo(f"{name}: sandbox {sandboxed} ms, plain subprocess {plain} ms")
    result |= provenance()
    write_json(out, result)


if __name__ == "__main__":
    main()
