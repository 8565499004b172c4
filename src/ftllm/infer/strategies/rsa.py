"""Recursive self-aggregation (RSA, arXiv 2509.26626).

Sample a population of N solutions per problem. Then, `loops` times, build N new prompts
per problem, each showing K candidates drawn at random from the current population and
asking for one improved solution ending in `\\boxed{}`; the N answers replace the
population. The final population is voted like plain self-consistency.

Every loop is one batched engine call over all problems (N prompts each, one sample per
prompt), so the cost is (loops + 1) x N generations per problem and the context grows to
about K x max_new_tokens.
"""
from __future__ import annotations

import dataclasses
import random

from ftllm.infer.strategies.base import Stopwatch, StrategyResult, problem_chat, round_seed, voted_results

AGGREGATION_PROMPT = (
    "{problem}\n\n"
    "Below are {count} candidate solutions to the problem above. Some may be wrong. "
    "Check them, aggregate the useful ideas and produce a single, high-quality solution. "
    "End with the final result in \\boxed{{}}.\n\n{candidates}"
)


@dataclasses.dataclass(frozen=True)
class RSAConfig:
    """YAML keys under `predict.rsa`."""

    population: int = 16  # N: solutions kept per problem
    subset: int = 4  # K: candidates shown in one aggregation prompt
    loops: int = 10  # T: aggregation steps after the initial population
    max_candidate_chars: int = 16000  # a candidate longer than this keeps only its tail (where the answer is)
    prompt: str = AGGREGATION_PROMPT  # placeholders {problem}, {count}, {candidates}
    seed: int = 0  # candidate subsets are drawn with this seed

    def __post_init__(self) -> None:
        if self.population < 1:
            raise ValueError(f"rsa.population must be >= 1, got {self.population}")
        if not 1 <= self.subset <= self.population:
            raise ValueError(f"rsa.subset must be between 1 and rsa.population ({self.population}), got {self.subset}")
        if self.loops < 0:
            raise ValueError(f"rsa.loops must be >= 0, got {self.loops}")
        for name in ("{problem}", "{candidates}"):
            if name not in self.prompt:
                raise ValueError(f"rsa.prompt must contain {name}")


def format_candidates(texts: list[str], max_chars: int) -> str:
    blocks = []
    for i, text in enumerate(texts, start=1):
        if len(text) > max_chars:
            text = "…" + text[-max_chars:]
        blocks.append(f"---- Solution {i} ----\n{text.strip()}")
    return "\n\n".join(blocks)


def aggregation_chat(chat: list[dict], candidates: list[str], config: RSAConfig) -> list[dict]:
    """The problem's chat with its last user turn rewritten to show the candidates."""
    chat = [dict(message) for message in chat]
    chat[-1]["content"] = config.prompt.format(
        problem=chat[-1]["content"],
        count=len(candidates),
        candidates=format_candidates(candidates, config.max_candidate_chars),
    )
    return chat


def run_rsa(engine, problems: list[dict], config) -> list[StrategyResult]:
    """RSA under `config.rsa`; the final population of each problem is voted."""
    rsa: RSAConfig = config.rsa
    chats = [problem_chat(row, config) for row in problems]
    template_kwargs = dict(config.prompt.chat_template_kwargs)
    rng = random.Random(rsa.seed)
    watch = Stopwatch(len(problems))
    tokens = [0] * len(problems)
    everyone = list(range(len(problems)))

    start = watch.clock()
    sampling = dataclasses.replace(config.sampling, n=rsa.population)
    population = engine.chat(chats, sampling, **template_kwargs)
    member_chats = [[chat] * len(completions) for chat, completions in zip(chats, population)]
    watch.charge(everyone, start)
    for i, completions in enumerate(population):
        tokens[i] += sum(c.num_tokens for c in completions)

    one = dataclasses.replace(config.sampling, n=1)
    for loop in range(rsa.loops):
        prompts, owners = [], []
        for i, completions in enumerate(population):
            texts = [c.text for c in completions]
            for _ in range(rsa.population):
                prompts.append(aggregation_chat(chats[i], rng.sample(texts, rsa.subset), rsa))
                owners.append(i)
        one = dataclasses.replace(one, seed=round_seed(config, loop + 1))
        start = watch.clock()
        outs = engine.chat(prompts, one, **template_kwargs)
        watch.charge(everyone, start)
        population, member_chats = [[] for _ in problems], [[] for _ in problems]
        for i, chat, completions in zip(owners, prompts, outs):
            population[i].extend(completions)
            member_chats[i].extend([chat] * len(completions))
            tokens[i] += sum(c.num_tokens for c in completions)

    def prompt_of(k: int, i: int) -> list[int]:  # the aggregation prompt member i was sampled from
        return engine.render_chats([member_chats[k][i]], **template_kwargs)[0]

    return voted_results(population, tokens, problems, config, watch, [{"loops": rsa.loops}] * len(problems),
                         engine=engine, prompt_of=prompt_of)
