"""The committed params.yaml (full profile) runs the reference method on the fast path (issue 12)."""
from __future__ import annotations

from pathlib import Path

import yaml

from ftllm.config import load_stage

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"


def test_cpt_streams_an_arxiv_corpus_to_a_token_budget_on_the_fast_path():
    cpt = load_stage(PARAMS, "cpt")
    assert (cpt.dataset.path, cpt.dataset.name, cpt.dataset.text_field) == ("EleutherAI/proof-pile-2", "arxiv", "text")
    assert cpt.token_budget and cpt.token_budget >= 100 * cpt.sequence_length
    assert cpt.separate_documents and cpt.attn_implementation == "flex_attention"
    assert cpt.gradient_checkpointing == "auto" and cpt.use_liger_kernel


def test_one_prompt_for_sft_rl_and_predict():
    prompts = {section: load_stage(PARAMS, section).prompt for section in ("sft", "rl", "predict")}
    assert prompts["sft"] == prompts["rl"] == prompts["predict"]
    assert "\\boxed{}" in (prompts["predict"].system_prompt or "") + (prompts["predict"].answer_instruction or "")


def test_sft_trains_the_whole_model_packed_with_flex_attention():
    sft, upscale = load_stage(PARAMS, "sft"), load_stage(PARAMS, "upscale")
    assert sft.train_layers == "all" and upscale.freeze_original is False
    assert sft.packing and sft.attn_implementation == "flex_attention" and sft.use_liger_kernel
    assert sft.gradient_checkpointing == "auto"


def test_rl_corrects_with_token_level_truncated_is():
    rl = load_stage(PARAMS, "rl")
    assert rl.use_vllm and rl.is_mode == "token_truncate" and rl.is_cap == 2.0


def test_predict_at_base_answers_with_the_instruct_baseline():
    base, baseline = load_stage(PARAMS, "base"), load_stage(PARAMS, "baseline")
    assert baseline.model != base.model and baseline.model.startswith(base.model) and "instruct" in baseline.model
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages["predict"]["foreach"]["base"] == "models/baseline"
    assert stages["baseline"]["outs"] == ["models/baseline"]
    for stage in ("sft", "rl"):
        assert "prompt" in stages[stage]["params"]
    assert "prompt" in stages["predict"]["do"]["params"]
