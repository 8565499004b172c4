"""The prompt contract: sft, rl (with its pass-rate filter) and predict send the model the same chat prefix."""
from __future__ import annotations

import pytest

from ftllm.config import ConfigError, build, load_stage
from ftllm.engine import Completion
from ftllm.engine.base import render_chat
from ftllm.io import write_records
from ftllm.prompting import ANSWER_INSTRUCTION, SYSTEM_PROMPT, PromptSpec, build_conversation

JUDGED_ROW = {"id": "j1", "problem": "$x^2 = 4$ を満たす正の $x$ を求めよ。", "reasoning": "平方根をとる。",
              "solution": "x = 2", "answer": "2"}  # fmt: skip
EVAL_ROW = {"id": "e1", "category": "中3", "unit": "二次方程式", "problem": "$\\frac{1}{2}x = 3$ を解け。",
            "solution": "6", "answer": "6"}  # fmt: skip


def test_default_is_the_competition_prompt():
    chat = build_conversation({"problem": "p"}, PromptSpec())
    assert chat == [{"role": "system", "content": SYSTEM_PROMPT + ANSWER_INSTRUCTION}, {"role": "user", "content": "p"}]
    no_system = build_conversation({"problem": "p"}, PromptSpec(system_prompt=None))
    assert no_system == [{"role": "user", "content": "p\n\n" + ANSWER_INSTRUCTION}]
    with pytest.raises(ConfigError, match="user_template"):
        build(PromptSpec, {"user_template": "no problem here"}, "prompt")


def test_stages_read_the_top_level_prompt_section(tmp_path):
    import yaml

    from ftllm.profiles import compose

    params = compose("test")
    params["prompt"]["system_prompt"] = "共有された系"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True))
    for section in ("sft", "rl", "predict"):
        assert load_stage(path, section).prompt.system_prompt == "共有された系", section


@pytest.mark.slow
def test_sft_rl_and_predict_render_the_same_prefix(tmp_path, tiny_model, monkeypatch):
    from datasets import Dataset
    from trl import SFTTrainer

    from ftllm.infer import PredictConfig
    from ftllm.models import load_model
    from ftllm.train import rl
    from ftllm.train.sft import SFTConfig, build_example, trainer_args

    prompt = {"system_prompt": "系", "answer_instruction": "答えは \\boxed{} に。", "user_template": "{problem}"}
    sft_config = build(SFTConfig, {"prompt": prompt, "reasoning": "inline", "dtype": "float32", "bf16": False,
                                   "max_length": 256, "global_batch_size": 2, "per_device_batch_size": 2,
                                   "use_liger_kernel": False, "gradient_checkpointing": False,
                                   "eos_token": "<|im_end|>", "num_processes": 1}, "sft")  # fmt: skip
    rl_config = build(rl.RLConfig, {"prompt": prompt, "bf16": False, "num_generations": 2, "prompts_per_step": 1,
                                    "per_device_batch_size": 2, "pass_rate_filter": {"k": 2, "backend": "hf"}}, "rl")
    predict_config = build(PredictConfig, {"engine": {"model": str(tiny_model)}, "prompt": prompt}, "predict")
    model, tokenizer = load_model(tiny_model, dtype="float32")
    rows = [JUDGED_ROW, EVAL_ROW]

    # predict: what the engine is asked to complete
    expected = [render_chat(tokenizer, build_conversation(r, predict_config.prompt), None,
                            **predict_config.prompt.chat_template_kwargs) for r in rows]  # fmt: skip
    assert expected[0] != expected[1]

    # sft: TRL's own tokenisation of the prompt-completion rows; the completion follows the same prefix
    trainer = SFTTrainer(model=model, args=trainer_args(sft_config, tmp_path / "ck", 1), processing_class=tokenizer,
                         train_dataset=Dataset.from_list([build_example(r, sft_config) for r in rows]))
    for ids, prefix in zip(trainer.train_dataset["input_ids"], expected):
        assert ids[: len(prefix)] == prefix and len(ids) > len(prefix)

    # rl: GRPO renders each prompt with add_generation_prompt and the config's template kwargs
    data = tmp_path / "kept.parquet"
    write_records(data, rows)
    examples = rl.load_prompts(data, rl_config)
    args = rl.grpo_args(rl_config, tmp_path / "rl")
    rendered = [tokenizer.apply_chat_template(ex["prompt"], add_generation_prompt=True, tokenize=True,
                                              return_dict=True, **args.chat_template_kwargs)["input_ids"]
                for ex in examples]  # fmt: skip
    assert rendered == expected

    # rl's pass-rate filter: the engine renders the same conversations with the same kwargs
    seen = []

    class Engine:
        def __init__(self, spec):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def chat(self, conversations, sampling, **kwargs):
            seen.extend(render_chat(tokenizer, c, None, **kwargs) for c in conversations)
            return [[Completion("\\boxed{2}", 3, None, "stop")] for _ in conversations]

    monkeypatch.setattr("ftllm.engine.make_engine", Engine)
    rates = rl.measure_pass_rates(examples, tiny_model, rl_config.pass_rate_filter, 0,
                                  rl_config.prompt.chat_template_kwargs)  # fmt: skip
    assert seen == expected
    assert rates == [1.0, 0.0]  # the judged row's answer is 2, the eval row's 6
