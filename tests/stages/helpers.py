"""Load a stage script's Click command (stages/ is a folder of scripts, not a package)."""
import importlib.util
from pathlib import Path

STAGES = Path(__file__).resolve().parents[2] / "stages"


def load_stage_main(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", STAGES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main
