"""Teacher prompts: built-in Japanese/English templates, overridable from params or a YAML file.

Templates are Jinja (StrictUndefined, so a misspelt variable fails at once) with these
variables: category, unit, difficulty, rubric, tool_rule, tool_use, example (the one-shot
example already wrapped in the output tags), language. The reply format is three tags,
`<problem>`, `<solution>`, `<answer>`: tags survive any language and any chat template,
and the one-shot example shows small models the exact shape. The fixed part (format,
example) comes first and the condition last, so vLLM's prefix cache shares the start.

For GPT-OSS the harmony system message (`Reasoning: high` ...) is written by the
model's own chat template from the `reasoning_effort` kwarg; our system text becomes
its developer instructions.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from ftllm.generate.grid import Cell
from ftllm.io import InputError


@dataclasses.dataclass(frozen=True)
class PromptSet:
    system: str
    user: str
    rubric: dict[int, str]
    tool_allowed: str
    tool_forbidden: str
    example: dict[str, str]  # problem, solution, answer


_RUBRIC_JA = {
    1: "教科書の例題レベル。1段階の基本計算",
    2: "教科書の基本問題。2段階程度の計算",
    3: "教科書の練習問題。標準的な手順で解ける",
    4: "定期テストの標準問題",
    5: "定期テストの応用問題。2つの考え方を組み合わせる",
    6: "高校入試・共通テストの標準レベル",
    7: "共通テストの難しめの問題・難関高校入試の標準レベル",
    8: "難関大学入試の標準レベル",
    9: "難関大学入試の難問",
    10: "数学オリンピック予選レベルの難問",
}

_RUBRIC_EN = {
    1: "textbook worked-example level, one basic step",
    2: "basic textbook exercise, about two steps",
    3: "standard textbook exercise solved by a routine method",
    4: "standard school test question",
    5: "applied school test question combining two ideas",
    6: "standard entrance-exam / common-test level",
    7: "harder common-test or selective high-school entrance level",
    8: "standard selective-university entrance level",
    9: "hard selective-university entrance problem",
    10: "mathematical olympiad qualifier level",
}

_EXAMPLE_JA = {
    "problem": "ある数 $x$ を3倍して5を引くと、$x$ に4を足した数と等しくなる。$x$ の値を求めよ。",
    "solution": "条件より $3x - 5 = x + 4$ である。両辺から $x$ を引くと $2x - 5 = 4$、"
                "両辺に5を足すと $2x = 9$。よって $x = \\frac{9}{2}$。",
    "answer": "\\frac{9}{2}",
}

_EXAMPLE_EN = {
    "problem": "Three times a number $x$, minus 5, equals $x$ plus 4. Find $x$.",
    "solution": "We have $3x - 5 = x + 4$. Subtracting $x$ gives $2x - 5 = 4$, so $2x = 9$ and $x = \\frac{9}{2}$.",
    "answer": "\\frac{9}{2}",
}

_USER_JA = """新しい数学の問題を1問作り、解答も書いてください。
問題文、途中式を含む解答、最終解答を、必ず次の3つのタグで囲んで書いてください。\
数式は LaTeX で書き、最終解答には数や式だけを書きます。

<problem>問題文</problem>
<solution>解答</solution>
<answer>最終解答</answer>

例（中1・一次方程式・難易度2）:
{{ example }}

今回の条件（例とは別の新しい問題にすること）:
- 学年・科目: {{ category }}
- 単元: {{ unit }}
- 難易度: {{ difficulty }} / 10（{{ rubric }}）
- {{ tool_rule }}"""

_USER_EN = """Write one new math problem and solve it.
Wrap the problem, the worked solution and the final answer in exactly these three tags. \
Write math in LaTeX; the final answer holds only the number or expression.

<problem>problem text</problem>
<solution>worked solution</solution>
<answer>final answer</answer>

Example (中1, linear equations, difficulty 2):
{{ example }}

Conditions for your problem (a new problem, not the example):
- Grade / course (Japanese curriculum): {{ category }}
- Unit: {{ unit }}
- Difficulty: {{ difficulty }} / 10 ({{ rubric }})
- {{ tool_rule }}"""

BUILTIN: dict[str, PromptSet] = {
    "ja": PromptSet(
        system="あなたは日本の中学校・高等学校の数学の先生です。生徒の練習用に、条件に合う新しい問題を作り、正確な解答を書きます。",
        user=_USER_JA,
        rubric=_RUBRIC_JA,
        tool_allowed="解答の中で Python のコード（```python で始まるコードブロック）を使って計算してよい。"
                     "コードは実行されないので、結果の値も解答に書くこと。",
        tool_forbidden="プログラムや計算ツールは使わず、手計算だけで解くこと。",
        example=_EXAMPLE_JA,
    ),
    "en": PromptSet(
        system="You are a Japanese middle- and high-school math teacher. "
               "You write new practice problems that fit the given conditions, with correct worked solutions.",
        user=_USER_EN,
        rubric=_RUBRIC_EN,
        tool_allowed="You may use Python code (a ```python code block) in the solution to compute. "
                     "The code is not run, so also write the values it gives.",
        tool_forbidden="Do not use programs or calculators; solve by hand.",
        example=_EXAMPLE_EN,
    ),
}

_FILE_KEYS = {"system", "user", "rubric", "tool_allowed", "tool_forbidden", "example"}


def load_prompt_set(
    language: str,
    template_file: str | None = None,
    system_template: str | None = None,
    user_template: str | None = None,
) -> PromptSet:
    """Built-in prompts for `language`, overridden by the YAML file, overridden by inline params."""
    prompts = BUILTIN[language]
    if template_file:
        prompts = dataclasses.replace(prompts, **_read_template_file(Path(template_file)))
    if system_template is not None:
        prompts = dataclasses.replace(prompts, system=system_template)
    if user_template is not None:
        prompts = dataclasses.replace(prompts, user=user_template)
    return prompts


def _read_template_file(path: Path) -> dict:
    if not path.exists():
        raise InputError(f"{path}: template file not found")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping with keys {', '.join(sorted(_FILE_KEYS))}")
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(unknown)}")
    if "rubric" in data:
        data["rubric"] = {int(k): str(v) for k, v in data["rubric"].items()}
    if "example" in data and set(data["example"]) != {"problem", "solution", "answer"}:
        raise InputError(f"{path}: example needs exactly problem, solution, answer")
    return data


def format_tagged(problem: str, solution: str, answer: str) -> str:
    """The reply format the parser expects (also used to show the one-shot example)."""
    return f"<problem>{problem}</problem>\n<solution>{solution}</solution>\n<answer>{answer}</answer>"


def render_conversation(prompts: PromptSet, cell: Cell, language: str) -> list[dict]:
    """System + user messages asking for one problem under `cell`."""
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    if cell.difficulty not in prompts.rubric:
        raise InputError(f"rubric has no entry for difficulty {cell.difficulty}")
    values = dict(
        category=cell.category,
        unit=cell.unit,
        difficulty=cell.difficulty,
        rubric=prompts.rubric[cell.difficulty],
        tool_use=cell.tool_use,
        tool_rule=prompts.tool_allowed if cell.tool_use else prompts.tool_forbidden,
        example=format_tagged(**prompts.example),
        language=language,
    )
    try:
        user = env.from_string(prompts.user).render(**values)
        system = env.from_string(prompts.system).render(**values)
    except jinja2.TemplateError as err:
        raise InputError(f"generate prompt template: {err}") from None
    messages = [{"role": "system", "content": system}] if system.strip() else []
    return messages + [{"role": "user", "content": user}]
