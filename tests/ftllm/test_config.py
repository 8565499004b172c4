import dataclasses

import pytest
import yaml

from ftllm.config import SECTIONS, ConfigError, EngineSpec, SamplingSpec, build, load_section, load_stage


@dataclasses.dataclass(frozen=True)
class Inner:
    a: int
    b: list[str] = dataclasses.field(default_factory=tuple)


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner
    rate: float = 0.5
    name: str | None = None


def test_build_nested_and_lists():
    cfg = build(Outer, {"inner": {"a": 1, "b": ["x", "y"]}, "rate": 1})
    assert cfg.inner.a == 1 and cfg.inner.b == ("x", "y") and cfg.rate == 1.0 and cfg.name is None


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"outer\.inner\.c"):
        build(Outer, {"inner": {"a": 1, "c": 2}}, "outer")


def test_missing_required_key_is_named():
    with pytest.raises(ConfigError, match=r"outer\.inner\.a: required"):
        build(Outer, {"inner": {}}, "outer")


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"outer\.inner\.a: expected int"):
        build(Outer, {"inner": {"a": "three"}}, "outer")


def test_post_init_errors_become_config_errors():
    with pytest.raises(ConfigError, match="backend"):
        build(EngineSpec, {"model": "m", "backend": "tgi"})
    with pytest.raises(ConfigError, match="n must be"):
        build(SamplingSpec, {"n": 0})


def test_missing_section_and_file(tmp_path):
    path = tmp_path / "params.yaml"
    with pytest.raises(ConfigError, match="not found"):
        load_section(path, "sft", Outer)
    path.write_text(yaml.safe_dump({"other": {}}))
    with pytest.raises(ConfigError, match="section 'sft' is missing"):
        load_section(path, "sft", Outer)


@pytest.mark.parametrize("profile", ["full", "demo", "test"])
def test_every_section_of_every_profile_loads(tmp_path, profile):
    """Each params.yaml section feeds its dataclass with no unknown or missing key."""
    from ftllm.profiles import compose, write_params

    params = compose(profile)
    assert set(params) - {"profile"} == set(SECTIONS), "params sections and the registry disagree"
    path = tmp_path / "params.yaml"
    write_params(params, path)
    for section in SECTIONS:
        load_stage(path, section)


def test_committed_params_yaml_is_the_full_profile():
    from ftllm.profiles import CONF_DIR, compose

    committed = yaml.safe_load((CONF_DIR.parent / "params.yaml").read_text(encoding="utf-8"))
    assert committed == compose("full"), "params.yaml is stale: run `make params`"
