"""Resumable checkpoint folders shared by the training stages (cpt, sft, rl).

Each stage writes its Trainer checkpoints to a persistent folder so a killed run resumes on
rerun. The folder records a fingerprint of what determines the run (config, input model,
data); a rerun with other inputs clears the folder instead of resuming a stale run.

    fingerprint = run_fingerprint(config, model_dir, data)
    resume_from = prepare_checkpoint_dir(checkpoint_dir, fingerprint, is_main=rank == 0)  # None: afresh
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path

from ftllm.io import write_json

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "run_fingerprint.json"
LAUNCH_ONLY_KEYS = ("num_processes", "accelerate_config")  # how a run is launched, not what it trains


def settings_digest(config):
    """A sha256 digest seeded with the config's settings, launch-only keys left out; add the inputs to it."""
    digest = hashlib.sha256()
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in LAUNCH_ONLY_KEYS}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest


def hash_path(digest, path: Path) -> None:
    """Add a file, or every file below a folder, to `digest`: small files by content, weights by a sample."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        if file.suffix in (".json", ".jsonl", ".parquet", ".jinja", ".txt", ".model"):
            digest.update(file.read_bytes())
        else:
            # Weights can be tens of GB: size, modification time and the first and last MiB stand in for
            # their bytes. Size alone let a rerun resume checkpoints trained from a different input model
            # of the same shape; a rewritten file (new mtime) now always starts afresh, the safe direction.
            stat = file.stat()
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
            with file.open("rb") as f:
                digest.update(f.read(1 << 20))
                f.seek(max(0, stat.st_size - (1 << 20)))
                digest.update(f.read(1 << 20))


def run_fingerprint(config, model_dir: str | Path, data: str | Path) -> str:
    """Hash of what determines a training run: the config (launch-only keys left out), model and data."""
    digest = settings_digest(config)
    hash_path(digest, Path(model_dir))
    hash_path(digest, Path(data))
    return digest.hexdigest()


def prepare_checkpoint_dir(checkpoint_dir: str | Path, fingerprint: str, *, is_main: bool) -> str | None:
    """Return the checkpoint to resume from; the main process first clears another run's checkpoints.

    Call it inside `main_process_first`: the other ranks only look, after the main one has finished.
    """
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(checkpoint_dir)
    record = folder / FINGERPRINT_FILE
    if is_main:
        if folder.is_dir() and (not record.exists() or json.loads(record.read_text())["fingerprint"] != fingerprint):
            log.info("%s holds checkpoints of another run: starting afresh", folder)
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(record, {"fingerprint": fingerprint})
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def checkpoint_step(checkpoint: str | Path | None) -> int:
    """The optimizer step a `checkpoint-N` folder was saved at (0 when there is none)."""
    return int(str(checkpoint).rsplit("-", 1)[1]) if checkpoint else 0
