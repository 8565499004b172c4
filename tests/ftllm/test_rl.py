"""The rl library: config checks, TRL argument mapping, prompt selection, and short GRPO runs on the tiny model."""
from __future__ import annotations

import json

import pytest

from ftllm.config import ConfigError, build
from ftllm.io import InputError, write_records
from ftllm.train import rewards
from ftllm.train.rl import (
    PassRateFilter,
    RLConfig,
    async_grpo_args,
    filter_by_pass_rate,
    gradient_accumulation_steps,
    grpo_args,
    load_prompts,
    measure_pass_rates,
    train_rl,
)
from ftllm.train.telemetry import aggregation_weights

TINY_RUN = dict(
    num_generations=4, max_completion_length=8, prompts_per_step=1, per_device_batch_size=4, max_steps=2,
    save_steps=1, dtype="float32", bf16=False, gradient_checkpointing=False, learning_rate=1e-3,
    mask_truncated_completions=False, num_processes=1,
)  # fmt: skip


def char_length(completions, **_):
    """Test-only reward that varies between random completions, so every group has a learning signal."""
    return [len(rewards.completion_text(c)) / 10 for c in completions]


@pytest.fixture
def length_reward(monkeypatch):
    monkeypatch.setitem(rewards.REWARDS, "char_length", char_length)


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    path = tmp_path_factory.mktemp("judged") / "kept.parquet"
    rows = [{"id": f"p{i}", "problem": f"{i} + {i} は?", "answer": str(2 * i), "solution": "..."} for i in range(4)]
    write_records(path, rows + [{"id": "blank", "problem": "?", "answer": "", "solution": ""}])
    return path


def test_config_rejects_bad_values():
    for bad, match in [
        ({"loss_type": "ppo"}, "loss_type"),
        ({"num_generations": 1}, "num_generations"),
        ({"rewards": {"acuracy": 1.0}}, "unknown reward"),
        ({"mode": "async", "loss_type": "dr_grpo"}, "async"),
        ({"mode": "async", "beta": 0.04}, "async"),
        ({"mode": "async", "filter_zero_std_groups": True}, "sync only"),
        ({"vllm_mode": "remote"}, "vllm_mode"),
        ({"pass_rate_filter": {"min_pass_rate": 0.9, "max_pass_rate": 0.1}}, "pass_rate"),
        ({"epsilon_hi": 0.3}, "rl.epsilon_hi"),
    ]:
        with pytest.raises(ConfigError, match=match):
            build(RLConfig, bad, "rl")


def test_gradient_accumulation_keeps_whole_groups_per_step():
    config = build(RLConfig, {"prompts_per_step": 4, "num_generations": 8, "per_device_batch_size": 8})
    assert gradient_accumulation_steps(config, processes=1) == 4
    assert gradient_accumulation_steps(config, processes=2) == 2
    with pytest.raises(ValueError, match="prompts_per_step"):
        gradient_accumulation_steps(config, processes=3)


def test_grpo_args_map_the_section(tmp_path):
    config = build(RLConfig, {
        "loss_type": "dr_grpo", "beta": 0.04, "epsilon_high": 0.28, "scale_rewards": "none", "bf16": False,
        "rewards": {"accuracy": 1.0, "single_box": 0.2}, "use_vllm": True, "vllm_mode": "server",
        "vllm_server_base_url": "http://host:8001", "mask_truncated_completions": True,
        "prompts_per_step": 2, "num_generations": 4, "per_device_batch_size": 4,
    })  # fmt: skip
    args = grpo_args(config, tmp_path)
    assert (args.loss_type, args.beta, args.epsilon_high, args.scale_rewards) == ("dr_grpo", 0.04, 0.28, "none")
    assert args.reward_weights == [1.0, 0.2]
    assert args.use_vllm and args.vllm_mode == "server" and args.vllm_server_base_url == "http://host:8001"
    assert args.vllm_importance_sampling_correction is True
    # token-level truncated IS (the reference's -A·ratio·TIS), not TRL's sequence_mask default
    assert (args.vllm_importance_sampling_mode, args.vllm_importance_sampling_clip_max) == ("token_truncate", 2.0)
    assert args.vllm_importance_sampling_clip_min is None
    assert args.mask_truncated_completions is True
    assert args.gradient_accumulation_steps == 2 and args.generation_batch_size == 8


def test_is_mode_and_cap_are_params(tmp_path):
    config = build(RLConfig, {"use_vllm": True, "is_mode": "token_mask", "is_cap": 5.0, "is_floor": 0.5,
                              "bf16": False, "prompts_per_step": 2, "num_generations": 4})  # fmt: skip
    args = grpo_args(config, tmp_path)
    assert args.vllm_importance_sampling_mode == "token_mask"
    assert (args.vllm_importance_sampling_clip_min, args.vllm_importance_sampling_clip_max) == (0.5, 5.0)
    for bad, match in [({"is_mode": "token"}, "is_mode"), ({"is_cap": None}, "is_cap must be set"),
                       ({"is_cap": 2.0, "is_floor": 3.0}, "is_floor")]:
        with pytest.raises(ConfigError, match=match):
            build(RLConfig, bad, "rl")


def test_async_args_map_the_policy_lag(tmp_path):
    from trl.experimental.async_grpo import AsyncGRPOTrainer  # noqa: F401 - the async path must import

    config = build(RLConfig, {"mode": "async", "max_staleness": 2, "weight_sync_steps": 3, "bf16": False,
                              "vllm_server_base_url": "http://gen:8000", "num_generations": 4})  # fmt: skip
    args = async_grpo_args(config, tmp_path)
    assert (args.max_staleness, args.weight_sync_steps) == (2, 3)
    assert args.vllm_server_base_url == "http://gen:8000"
    assert args.num_generations == 4 and args.epsilon_high == 0.28
    # a step trains on the rl section's completions, as in sync mode: TRL's token budgeting is off unless asked for
    assert args.token_budget == 0
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 16 * 4
    assert async_grpo_args(build(RLConfig, {"mode": "async", "bf16": False, "token_budget": 4096}), tmp_path
                           ).token_budget == 4096  # fmt: skip
    with pytest.raises(ConfigError, match="token_budget"):
        build(RLConfig, {"mode": "async", "token_budget": -1}, "rl")


def test_load_prompts_fills_the_template_and_skips_rows_without_answer(judged, tmp_path):
    config = build(RLConfig, {"prompt": {"user_template": "問題: {problem} \\boxed{} で", "system_prompt": "先生",
                                         "answer_instruction": None},
                              "max_prompts": 3})
    examples = load_prompts(judged, config)
    assert len(examples) == 3
    assert examples[1] == {
        "prompt": [{"role": "system", "content": "先生"}, {"role": "user", "content": "問題: 1 + 1 は? \\boxed{} で"}],
        "answer": "2",
        "id": "p1",
    }
    write_records(tmp_path / "bad.jsonl", [{"problem": "x"}])
    with pytest.raises(InputError, match="answer"):
        load_prompts(tmp_path / "bad.jsonl", config)


def test_filter_by_pass_rate_drops_always_and_never_solved():
    examples = [{"id": str(i)} for i in range(4)]
    kept = filter_by_pass_rate(examples, [0.0, 0.25, 1.0, 0.75], PassRateFilter(k=4))
    assert [ex["id"] for ex in kept] == ["1", "3"]


@pytest.mark.slow
def test_measure_pass_rates_samples_k_times(tiny_model, judged):
    examples = load_prompts(judged, RLConfig())[:2]
    examples[0]["answer"] = "never produced by a random model"
    rates = measure_pass_rates(examples, tiny_model, PassRateFilter(k=2, backend="hf", max_new_tokens=4), seed=0)
    assert len(rates) == 2 and all(r in (0.0, 0.5, 1.0) for r in rates)
    assert rates[0] == 0.0


def test_pass_rate_filter_hands_its_engine_settings_to_the_engine(monkeypatch):
    import ftllm.engine
    from ftllm.engine.base import Completion

    seen = {}

    class Recorder:
        def __init__(self, spec):
            seen["spec"] = spec

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def chat(self, prompts, sampling, **_):
            seen["sampling"] = sampling
            return [[Completion(text=r"\boxed{3}", num_tokens=3)] * sampling.n for _ in prompts]

    monkeypatch.setattr(ftllm.engine, "make_engine", Recorder)
    spec = PassRateFilter(k=2, max_model_len=2048, max_new_tokens=64, enforce_eager=True)
    rates = measure_pass_rates([{"prompt": [{"role": "user", "content": "1+2"}], "answer": "3"}], "models/x", spec, 7)
    assert rates == [1.0]
    engine = seen["spec"]
    assert (engine.model, engine.max_model_len, engine.enforce_eager, engine.seed) == ("models/x", 2048, True, 7)
    assert (seen["sampling"].n, seen["sampling"].max_new_tokens) == (2, 64)


def _weights(path):
    import torch
    from safetensors.torch import load_file

    return {k: v.to(torch.float32) for k, v in load_file(str(path / "model.safetensors")).items()}


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_grpo_steps_train_and_log_telemetry(tiny_model, judged, tmp_path, length_reward, loss_type):
    config = build(RLConfig, {**TINY_RUN, "loss_type": loss_type, "rewards": {"char_length": 1.0}}, "rl")
    metrics = train_rl(config, tiny_model, judged, tmp_path / "out", tmp_path / "ckpt", tmp_path / "m.json",
                       tmp_path / "plots")  # fmt: skip
    assert metrics["steps"] == 2 and metrics["loss_type"] == loss_type and metrics["prompts"] == 4
    before, after = _weights(tiny_model), _weights(tmp_path / "out")
    assert any(not (before[k] == after[k]).all() for k in before), "the policy did not move"
    assert json.loads((tmp_path / "m.json").read_text())["steps"] == 2

    steps = json.loads((tmp_path / "plots" / "steps.json").read_text())
    assert [s["step"] for s in steps] == [1, 2]
    assert all(s["reward_std"] > 0 and "clip_fraction" in s and s["completion_length_max"] <= 8 for s in steps)
    groups = json.loads((tmp_path / "plots" / "groups.json").read_text())
    assert len(groups) == 2 * 4
    for step in (1, 2):
        rows = [g for g in groups if g["step"] == step]
        lengths = [g["length"] for g in rows]
        assert [g["m"] for g in rows] == aggregation_weights(lengths, loss_type, max_completion_length=8)
    # each logged step measured its micro-batch's weights through TRL's loss: they agree with the formula
    weights = json.loads((tmp_path / "plots" / "weights.json").read_text())
    assert sorted({w["step"] for w in weights}) == [1, 2]
    assert {w["loss_type"] for w in weights} == {"grpo", "dapo", "dr_grpo", "bnpo"}  # the others probed alongside
    assert [w["loss_type"] for w in weights if w["trained"]] == [loss_type] * 2 * 4
    assert all(w["m_step_measured"] == pytest.approx(w["m_step_formula"], rel=1e-6, abs=1e-9) for w in weights)
    live = tmp_path / "plots" / "dvclive" / "plots"
    assert len((live / "metrics" / "completion_length_mean.tsv").read_text().splitlines()) == 1 + 2
    assert len(json.loads((live / "custom" / "weights.json").read_text())) == 2 * 4


@pytest.mark.slow
def test_zero_std_groups_leave_the_loss(tiny_model, judged, tmp_path):
    # a random model never answers correctly: every group has zero reward variance
    config = build(RLConfig, {**TINY_RUN, "max_steps": 1, "filter_zero_std_groups": True}, "rl")
    train_rl(config, tiny_model, judged, tmp_path / "out", tmp_path / "ckpt", plots_dir=tmp_path / "plots")
    groups = json.loads((tmp_path / "plots" / "groups.json").read_text())
    assert groups and all(g["length"] == 0 and g["m"] == 0.0 for g in groups)
    steps = json.loads((tmp_path / "plots" / "steps.json").read_text())
    assert steps[0]["zero_std_fraction"] == 1.0 and steps[0]["reward_mean"] == 0.0


class Killed(RuntimeError):
    pass


def kill_after_first_checkpoint():
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise Killed(f"killed after saving step {state.global_step}")

    return Kill()


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(tiny_model, judged, tmp_path, length_reward):
    config = build(RLConfig, {**TINY_RUN, "rewards": {"char_length": 1.0}}, "rl")
    paths = dict(model_dir=tiny_model, data=judged, out_dir=tmp_path / "out", checkpoint_dir=tmp_path / "ckpt",
                 plots_dir=tmp_path / "plots")  # fmt: skip
    with pytest.raises(Killed):
        train_rl(config, **paths, callbacks=(kill_after_first_checkpoint(),))
    assert (tmp_path / "ckpt" / "checkpoint-1").is_dir() and not (tmp_path / "out").exists()
    assert (tmp_path / "ckpt" / "rl_prompts.json").exists()  # the resumed run reuses the selected prompts

    metrics = train_rl(config, **paths)
    assert metrics["resumed_from_step"] == 1 and metrics["steps"] == 2
    steps = json.loads((tmp_path / "plots" / "steps.json").read_text())
    assert [s["step"] for s in steps] == [1, 2]  # step 1 comes from the checkpoint's telemetry
    assert {g["step"] for g in json.loads((tmp_path / "plots" / "groups.json").read_text())} == {1, 2}


def test_fewer_prompts_than_one_step_is_one_line_before_any_training(tiny_model, judged, tmp_path):
    # 4 usable rows, 8 prompts a step: TRL would drop the short chunk, run 0 steps and save the start model
    config = build(RLConfig, {**TINY_RUN, "prompts_per_step": 8}, "rl")
    with pytest.raises(InputError, match=r"4 RL prompt\(s\) left .* rl.prompts_per_step = 8"):
        train_rl(config, tiny_model, judged, tmp_path / "out", tmp_path / "ckpt")
    assert not (tmp_path / "out").exists()
