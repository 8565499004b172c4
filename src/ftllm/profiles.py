"""Profiles: the same pipeline at full scale (GPU), as a CPU demo, or as a test run.

`conf/config.yaml` is the source of the full-scale params; `conf/profile/<name>.yaml`
overrides it. DVC's Hydra integration composes them into `params.yaml` on
`dvc exp run -S profile=demo`; this module does the same composition in Python so
tests and `make params` get exactly what DVC would.

    python -m ftllm.profiles full --out params.yaml
    python -m ftllm.profiles test --set base.model=/tmp/tiny --out /tmp/p/params.yaml
"""
from __future__ import annotations

from pathlib import Path

import click
import yaml

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose(profile: str = "full", overrides: list[str] = (), conf_dir: Path = CONF_DIR) -> dict:
    """params.yaml contents for `profile`, with Hydra-style `key=value` overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=[f"profile={profile}", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def write_params(params: dict, path: Path) -> None:
    from ftllm.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True), encoding="utf-8")


@click.command()
@click.argument("profile", default="full")
@click.option("--set", "overrides", multiple=True, help="Hydra override, e.g. sft.max_steps=3")
@click.option("--out", type=click.Path(path_type=Path), default="params.yaml", show_default=True)
def main(profile: str, overrides: tuple[str, ...], out: Path) -> None:
    """Compose conf/ with PROFILE (full | demo | test) into a params file."""
    write_params(compose(profile, list(overrides)), out)
    click.echo(f"wrote {out} ({profile})")


if __name__ == "__main__":
    main()
