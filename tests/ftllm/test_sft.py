"""Unit tests of ftllm.train.sft: conversations, batch arithmetic, freezing, resume, training on the tiny model."""
from __future__ import annotations

import json

import pytest

from ftllm.config import ConfigError, build
from ftllm.io import InputError, write_parquet
from ftllm.prompting import fill_template
from ftllm.train.checkpoints import prepare_checkpoint_dir, run_fingerprint
from ftllm.train.sft import (
    SFTConfig,
    build_example,
    freeze_all_but_layers,
    gradient_accumulation_steps,
    layers_to_train,
    train_sft,
)

ROW = {
    "id": "q1",
    "problem": "2x + 3 = 7 を解きなさい。",
    "reasoning": "両辺から3を引いて2で割る。",
    "solution": "2x = 4 より x = 2。",
    "answer": "2",
}


def rows(n: int = 8) -> list[dict]:
    return [
        {"id": f"q{i}", "problem": f"{i} + {i} を計算しなさい。", "reasoning": f"{i} と {i} を足す。",
         "solution": f"{i} + {i} = {2 * i}", "answer": str(2 * i)}
        for i in range(n)
    ]  # fmt: skip


def tiny_config(**overrides) -> SFTConfig:
    values = dict(
        eos_token="<|im_end|>", dtype="float32", bf16=False, max_length=256, global_batch_size=4,
        per_device_batch_size=2, max_steps=3, save_steps=1, num_processes=1, gradient_checkpointing=False,
        use_liger_kernel=False, learning_rate=1e-3, attn_implementation="sdpa",  # flex has no CPU backward
    )  # fmt: skip
    values.update(overrides)
    return build(SFTConfig, values, "sft")


def test_fill_template_keeps_unknown_braces():
    assert fill_template("{problem} \\boxed{} {nope}", ROW) == "2x + 3 = 7 を解きなさい。 \\boxed{} {nope}"


def test_example_field_mode_puts_reasoning_in_thinking():
    config = tiny_config(prompt={"system_prompt": "あなたは数学の先生です。",
                                 "answer_instruction": "答えは \\boxed{} に。"})
    example = build_example(ROW, config)
    assert [m["role"] for m in example["prompt"]] == ["system", "user"]
    assert example["prompt"][0]["content"] == "あなたは数学の先生です。答えは \\boxed{} に。"
    assert example["prompt"][1]["content"] == ROW["problem"]
    (assistant,) = example["completion"]
    assert assistant["thinking"] == ROW["reasoning"]
    assert assistant["content"] == "2x = 4 より x = 2。\n\n\\boxed{2}"  # answer appended in the graded format


def test_example_inline_and_drop_modes():
    inline = build_example(ROW, tiny_config(reasoning="inline"))["completion"][0]
    assert "thinking" not in inline
    assert inline["content"].startswith("<think>\n" + ROW["reasoning"] + "\n</think>")
    assert inline["content"].endswith("\\boxed{2}")
    dropped = build_example(ROW, tiny_config(reasoning="drop"))["completion"][0]
    assert "thinking" not in dropped and ROW["reasoning"] not in dropped["content"]


def test_existing_boxed_answer_is_not_repeated():
    row = {**ROW, "solution": "よって \\boxed{2}"}
    assert build_example(row, tiny_config())["completion"][0]["content"] == "よって \\boxed{2}"


def test_gradient_accumulation_keeps_global_batch():
    assert gradient_accumulation_steps(128, 2, 8) == 8
    assert gradient_accumulation_steps(128, 2, 1) == 64
    with pytest.raises(ValueError, match="global_batch_size 128"):
        gradient_accumulation_steps(128, 3, 1)


@pytest.mark.parametrize(
    ("values", "key"),
    [({"reasoning": "maybe"}, "reasoning"), ({"num_processes": 0}, "num_processes"), ({"lr": 1.0}, "sft.lr"),
     ({"train_layers": "some"}, "train_layers"), ({"warmup_ratio": 1.5}, "warmup_ratio")],
)  # fmt: skip
def test_bad_config_names_the_key(values, key):
    with pytest.raises(ConfigError, match=key):
        build(SFTConfig, values, "sft")


def test_num_processes_accepts_auto_and_int():
    assert build(SFTConfig, {"num_processes": "auto"}, "sft").num_processes == "auto"
    assert build(SFTConfig, {"num_processes": 4}, "sft").num_processes == 4


def test_layers_to_train_modes(tmp_path):
    assert layers_to_train(tmp_path, "all") is None
    assert layers_to_train(tmp_path, "auto") is None  # not upscaled: train everything
    with pytest.raises(InputError, match="upscale.json"):
        layers_to_train(tmp_path, "new")
    (tmp_path / "upscale.json").write_text(json.dumps({"new_layers": [1, 3], "freeze_original": False}))
    assert layers_to_train(tmp_path, "new") == [1, 3]
    assert layers_to_train(tmp_path, "auto") is None  # upscale asked not to freeze


def test_checkpoint_dir_cleared_only_for_another_run(tmp_path):
    folder = tmp_path / "ck"
    assert prepare_checkpoint_dir(folder, "a", is_main=True) is None
    (folder / "checkpoint-5").mkdir()
    assert prepare_checkpoint_dir(folder, "a", is_main=True).endswith("checkpoint-5")
    assert prepare_checkpoint_dir(folder, "b", is_main=True) is None  # other inputs: never resume from it
    assert not (folder / "checkpoint-5").exists()


def test_fingerprint_follows_config_and_data(tmp_path, tiny_model):
    data = tmp_path / "kept.parquet"
    write_parquet(data, rows())
    base = run_fingerprint(tiny_config(), tiny_model, data)
    assert run_fingerprint(tiny_config(num_processes=2), tiny_model, data) == base  # launch-only key
    assert run_fingerprint(tiny_config(learning_rate=2e-3), tiny_model, data) != base
    write_parquet(data, rows(7))
    assert run_fingerprint(tiny_config(), tiny_model, data) != base


@pytest.mark.slow
def test_freeze_all_but_layers(tiny_model):
    from ftllm.models import load_model

    model, _ = load_model(tiny_model, dtype="float32")
    trainable = freeze_all_but_layers(model, [1, 2])
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(".layers.1." in n or ".layers.2." in n for n in names)
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="no parameters"):
        freeze_all_but_layers(model, [99])


@pytest.mark.slow
def test_loss_is_on_the_completion_only(tmp_path, tiny_model):
    from datasets import Dataset
    from trl import SFTTrainer

    from ftllm.models import load_model
    from ftllm.train.sft import trainer_args

    model, tokenizer = load_model(tiny_model, dtype="float32")
    args = trainer_args(tiny_config(), tmp_path / "ck", 1)
    trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_list([build_example(ROW, tiny_config())]))  # fmt: skip
    example = trainer.train_dataset[0]
    trained = [t for t, label in zip(example["input_ids"], example["labels"]) if label != -100]
    text = tokenizer.decode(trained)
    assert text.startswith("<think>\n" + ROW["reasoning"])  # thinking is part of the completion
    assert "\\boxed{2}<|im_end|>" in text  # the model learns to stop with the template's end token
    assert ROW["problem"] not in text  # the prompt is never trained on


class SimulatedKill(Exception):
    pass


def kill_at(step: int):
    """A trainer callback that raises at `step`, standing in for a job killed mid-run."""
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise SimulatedKill(f"killed at step {step}")

    return Kill()


def record_steps(seen: list):
    from transformers import TrainerCallback

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(state.global_step)

    return Record()


@pytest.mark.slow
def test_killed_run_resumes_from_last_checkpoint(tmp_path, tiny_model):
    data = tmp_path / "kept.parquet"
    write_parquet(data, rows())
    config = tiny_config(max_steps=4)
    paths = dict(out_dir=tmp_path / "sft", checkpoint_dir=tmp_path / "ck",
                 metrics_path=tmp_path / "m.json", loss_log_path=tmp_path / "loss.json")  # fmt: skip
    with pytest.raises(SimulatedKill):
        train_sft(config, tiny_model, data, callbacks=(kill_at(3),), **paths)
    assert not (tmp_path / "sft").exists()  # no half-trained model left behind
    saved = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "ck").glob("checkpoint-*"))
    assert saved and max(saved) < 4

    seen = []
    metrics = train_sft(config, tiny_model, data, callbacks=(record_steps(seen),), **paths)
    assert metrics["resumed_from_step"] == max(saved) > 0
    assert seen == list(range(max(saved) + 1, 5))  # only the steps after the checkpoint were trained again
    assert metrics["steps"] == 4
    steps = [r["step"] for r in json.loads((tmp_path / "loss.json").read_text())]
    assert steps == [1, 2, 3, 4]  # the log covers the steps before the kill too
    assert not list((tmp_path / "ck").glob("checkpoint-*"))  # finished: checkpoints are dropped


@pytest.mark.slow
def test_train_only_new_layers(tmp_path, tiny_model):
    import shutil

    import torch
    from safetensors.torch import load_file

    model_dir = tmp_path / "upscaled"
    shutil.copytree(tiny_model, model_dir)
    (model_dir / "upscale.json").write_text(json.dumps({"new_layers": [2], "freeze_original": True}))
    data = tmp_path / "kept.parquet"
    write_parquet(data, rows())
    metrics = train_sft(tiny_config(max_steps=2, train_layers="auto"), model_dir, data, tmp_path / "sft",
                        tmp_path / "ck")
    before, after = load_file(model_dir / "model.safetensors"), load_file(tmp_path / "sft" / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".layers.2." in k for k in changed)
    assert metrics["trainable_params"] == sum(v.numel() for k, v in before.items() if ".layers.2." in k)


def _per_document_losses(trainer, batch, **call) -> dict[tuple, float]:
    """Mean next-token loss of each document in a (packed or single-row) batch, keyed by its token ids.

    The batch goes through the stage's own `compute_loss` (TRL sets use_cache=False there), unless
    `call` asks for a direct model call (the negative control).
    """
    import torch

    if call:
        logits = trainer.model(**{k: v for k, v in batch.items() if k in ("input_ids", "position_ids")}, **call).logits
    else:
        _, outputs = trainer.compute_loss(trainer.model, dict(batch), return_outputs=True)
        logits = outputs.logits
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    positions = batch.get("position_ids", torch.arange(len(ids))[None])[0]
    token_loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), labels[1:], reduction="none",
                                                   ignore_index=-100)
    starts = [int(i) for i in (positions == 0).nonzero().flatten()] + [len(ids)]
    losses = {}
    for start, end in zip(starts, starts[1:]):
        mask = labels[start + 1 : end] != -100
        losses[tuple(ids[start:end].tolist())] = float(token_loss[start:end - 1][mask].mean())
    return losses


@pytest.mark.slow
def test_packed_training_gives_each_document_its_unpacked_loss(tmp_path, tiny_model):
    import torch

    from ftllm.train.sft import build_trainer

    data = tmp_path / "kept.parquet"
    write_parquet(data, rows(4))
    common = dict(max_length=512, global_batch_size=4, per_device_batch_size=4, reasoning="inline")
    packed, _ = build_trainer(tiny_config(packing=True, **common), tiny_model, data, tmp_path / "ck-packed")
    unpacked, _ = build_trainer(tiny_config(packing=False, **common), tiny_model, data, tmp_path / "ck-unpacked")
    assert len(packed.train_dataset) < 4  # rows share packs
    batch = packed.data_collator([packed.train_dataset[i] for i in range(len(packed.train_dataset))])
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1  # padding-free: one flat row

    with torch.no_grad():
        together = _per_document_losses(packed, batch)
        alone = {}
        for i in range(len(unpacked.train_dataset)):
            alone |= _per_document_losses(unpacked, unpacked.data_collator([unpacked.train_dataset[i]]))
        leaked = _per_document_losses(packed, batch, use_cache=True)
    assert sorted(together) == sorted(alone) and len(alone) == 4
    for document, loss in alone.items():
        assert together[document] == pytest.approx(loss, rel=1e-4, abs=1e-5)
    # the control: with a KV cache transformers ignores the document boundaries, and later documents see earlier ones
    assert any(abs(leaked[d] - alone[d]) > 1e-3 for d in alone)
