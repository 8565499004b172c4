"""A persisted checkpoint folder must not be resumed when the input model changed (same shape, new weights)."""
import dataclasses

from ftllm.train.checkpoints import run_fingerprint
from ftllm.train.sft import SFTConfig


def _model(tmp_path):
    """A model folder with a config and 4 KiB of "weights"; returns (folder, weights file)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    weights = model / "model.safetensors"
    weights.write_bytes(b"\x00" * 4096)
    return model, weights


def test_same_size_new_weights_changes_the_fingerprint(tmp_path):
    model, weights = _model(tmp_path)
    data = tmp_path / "rows.jsonl"
    data.write_text('{"problem": "p"}\n')
    config = SFTConfig()
    before = run_fingerprint(config, model, data)
    assert run_fingerprint(config, model, data) == before, "the same inputs must resume"
    weights.write_bytes(b"\x01" * 4096)  # same size, other values: what a changed upstream stage writes
    assert run_fingerprint(config, model, data) != before
    assert run_fingerprint(dataclasses.replace(config, learning_rate=1e-5), model, data) != before


def test_cpt_fingerprint_also_sees_new_weights(tmp_path):
    from ftllm.train.cpt import CPTConfig
    from ftllm.train.cpt import run_fingerprint as cpt_fingerprint

    model, weights = _model(tmp_path)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("text\n")
    config = CPTConfig(rope_theta=1e6)
    before = cpt_fingerprint(config, model, [corpus])
    assert cpt_fingerprint(config, model, [corpus]) == before
    weights.write_bytes(b"\x01" * 4096)
    assert cpt_fingerprint(config, model, [corpus]) != before
