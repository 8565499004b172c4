"""Inputs and params are checked before any compute, and every error is one line naming file:line or key."""
import json

import pytest
import yaml
from click.testing import CliRunner

from ftllm.config import ConfigError, EngineSpec, SamplingSpec, build, load_stage
from ftllm.engine import Completion
from ftllm.evaluate import EvaluateConfig
from ftllm.infer import PredictConfig
from ftllm.infer.predict import PROBLEM_TYPES, clean_output, predict
from ftllm.io import InputError, read_jsonl, read_records, write_parquet
from tests.stages.helpers import load_stage_main


def test_non_utf8_input_names_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"id": 1, "problem": "ok"}\n{"id": 2, "problem": "\xff\xfe"}\n')
    with pytest.raises(InputError, match=r"p\.jsonl:2: not UTF-8"):
        read_jsonl(path)


def test_duplicate_ids_are_an_error_naming_both_lines(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "problem": "x"}\n{"id": "b", "problem": "y"}\n\n{"id": "a", "problem": "z"}\n')
    with pytest.raises(InputError, match=r"p\.jsonl:4: duplicate id 'a' \(first on line 1\)"):
        read_jsonl(path, unique="id")
    path.write_text('{"id": 1, "problem": "x"}\n{"id": "b", "problem": "y"}\n')
    with pytest.raises(InputError, match=r"p\.jsonl:2: id 'b' is str, but the id on line 1 is int"):
        read_jsonl(path, unique="id")  # samples.parquet could not hold both: caught before generating


@pytest.mark.parametrize("row, message", [
    ({"id": True, "problem": "x"}, "field id must be str or int, got bool True"),
    ({"id": 1.5, "problem": "x"}, "field id must be str or int, got float"),
    ({"id": [1], "problem": "x"}, "field id must be str or int, got list"),
    ({"id": 1, "problem": 7}, "field problem must be str, got int"),
    ({"id": 1, "problem": "x", "evaluation_method": ["soft"]}, "field evaluation_method must be str"),
])
def test_field_types_are_checked_with_file_and_line(tmp_path, row, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 0, "problem": "fine"}\n' + json.dumps(row) + "\n")
    with pytest.raises(InputError, match=r"p\.jsonl:2: " + message.replace("(", r"\(").replace("[", r"\[")):
        read_jsonl(path, required=("id", "problem"), types=PROBLEM_TYPES)


def test_parquet_rows_are_type_checked_too(tmp_path):
    write_parquet(tmp_path / "r.parquet", [{"problem": 2}, {"problem": 3}])
    with pytest.raises(InputError, match=r"r\.parquet: row 1: field problem must be str, got int"):
        read_records(tmp_path / "r.parquet", types={"problem": (str,)})


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("predict:\n  engine:\n    model: m\n  sampling: {n: 2\n")
    with pytest.raises(ConfigError, match=r"params\.yaml:\d+: YAML syntax error") as err:
        load_stage(path, "predict")
    assert "\n" not in str(err.value)
    path.write_bytes(b"predict:\n  engine: {model: \xff}\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: not UTF-8"):
        load_stage(path, "predict")


@pytest.mark.parametrize("cls, values, message", [
    (SamplingSpec, {"temperature": "hot"}, "config.temperature: expected a number, got 'hot'"),
    (SamplingSpec, {"temperature": -1}, "config.temperature: must be >= 0, got -1.0"),
    (SamplingSpec, {"top_p": 0}, "config.top_p: must be > 0"),
    (SamplingSpec, {"top_p": 1.5}, "config.top_p: must be <= 1"),
    (EngineSpec, {"model": "m", "request_timeout_s": 0}, "config.request_timeout_s: must be > 0"),
    (EngineSpec, {"model": "m", "max_model_len": 0}, "config.max_model_len: must be > 0"),
    (EngineSpec, {"model": "m", "batch_size": 0}, "config.batch_size: must be > 0"),
    (EngineSpec, {"model": "m", "max_concurrency": "many"}, "config.max_concurrency: expected int"),
    (EvaluateConfig, {"workers": -1}, "config.workers: must be >= 0"),
    (EvaluateConfig, {"timeout_s": 0}, "config.timeout_s: must be > 0"),
    (PredictConfig, {"engine": {"model": "m"}, "sampling": {"temperature": -0.5}},
     "config.sampling.temperature: must be >= 0"),
])
def test_params_are_typed_and_range_checked(cls, values, message):
    with pytest.raises(ConfigError, match="^" + message.replace(".", r"\.").replace("(", r"\(")):
        build(cls, values)


def test_every_committed_profile_passes_the_range_checks(tmp_path):
    from ftllm.config import SECTIONS
    from ftllm.profiles import main as profiles_main

    for profile in ("full", "demo", "test"):
        out = tmp_path / f"{profile}.yaml"
        profiles_main.main([profile, "--out", str(out)], standalone_mode=False)
        for section in yaml.safe_load(out.read_text()):
            if section in SECTIONS:
                load_stage(out, section)


def _stage_params(tmp_path, **sampling):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"predict": {"engine": {"model": str(tmp_path / "no-model"), "backend": "hf"},
                                                "sampling": {"n": 1, **sampling}}}))
    return path


@pytest.mark.parametrize("problems, params, message", [
    ('{"id": 1, "problem": "x"}\n', {"temperature": "hot"}, "predict.sampling.temperature: expected a number"),
    ('{"id": 1, "problem": "x"}\n{"id": 1, "problem": "y"}\n', {}, "problems.jsonl:2: duplicate id 1"),
    ('{"id": null, "problem": "x"}\n', {}, "problems.jsonl:1: field id must be str or int"),
    (b'{"id": 1, "problem": "\xc3"}\n', {}, "problems.jsonl:1: not UTF-8"),
])
def test_predict_stage_stops_before_loading_the_model_with_one_line(tmp_path, problems, params, message):
    main = load_stage_main("predict")
    path = tmp_path / "problems.jsonl"
    path.write_bytes(problems if isinstance(problems, bytes) else problems.encode())
    result = CliRunner().invoke(main, ["--params", str(_stage_params(tmp_path, **params)), "--input", str(path),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "out").exists()


def test_control_characters_never_reach_the_output(tmp_path, monkeypatch):
    assert clean_output("\\boxed{1\x00 2}\x07\x1b[0m\x85") == "\\boxed{1 2}[0m"
    assert clean_output("a\tb\nc") == "a\tb\nc"

    class NulEngine:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def render_chats(self, conversations, **kwargs):
            return [[1, 2, 3] for _ in conversations]

        def generate_ids(self, prompts, sampling, on_finished=None, seeds=None):
            outs = [[Completion("so \\boxed{1\x00 2}", 4, -1.0, "stop", token_ids=[5])] * sampling.n for _ in prompts]
            for p, cs in zip(prompts, outs) if on_finished else ():
                on_finished(p, cs)
            return outs

        def score_ids(self, prompts, continuations):
            return [None] * len(prompts)

    monkeypatch.setattr("ftllm.engine.make_engine", lambda spec: NulEngine())
    config = PredictConfig(engine=EngineSpec(model="unused", backend="hf"), sampling=SamplingSpec(n=3), parse_workers=0)
    predict(config, [{"id": 1, "problem": "p"}], tmp_path / "out")
    raw = (tmp_path / "out" / "predictions.jsonl").read_bytes()
    assert b"\\u0000" not in raw and b"\x00" not in raw
    # the vote reads what the grader reads: NUL stripped, then the digits joined
    assert json.loads(raw)["output"] == "\\boxed{12}"


def test_judge_and_training_readers_check_types(tmp_path):
    from ftllm.judge import read_shards
    from ftllm.train.rl import load_prompts

    shard = tmp_path / "shard-0.parquet"
    write_parquet(shard, [{"id": "a", "problem": "p", "solution": "s", "answer": 3}])
    with pytest.raises(InputError, match=r"shard-0\.parquet: row 1: field answer must be str, got int"):
        read_shards([shard])
    judged = tmp_path / "kept.parquet"
    write_parquet(judged, [{"id": "a", "problem": 12, "answer": "3"}])
    with pytest.raises(InputError, match=r"kept\.parquet: row 1: field problem must be str, got int"):
        load_prompts(judged, config=None)


def test_engines_strip_control_characters_from_generated_text():
    from types import SimpleNamespace

    from ftllm.engine.vllm import _completions

    out = SimpleNamespace(outputs=[SimpleNamespace(text="x \\boxed{1\x00 2}\x1b", token_ids=[1, 2],
                                                    cumulative_logprob=-1.0, finish_reason="stop")])
    (c,) = _completions(out)
    assert c.text == "x \\boxed{1 2}"
