"""The team's DVC remote, end to end against a local S3-compatible server (moto) on 127.0.0.1.

A throwaway git+DVC repo takes the project's own `.dvc/config` (default remote, cache link types,
`verify`), points the remote at the local server through `.dvc/config.local` exactly as a team
would, runs a two-stage pipeline, pushes, wipes, pulls, and then corrupts objects on both sides.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]

PIPELINE = {
    "stages": {
        "make": {
            "cmd": "python -c \"open('a.txt', 'w').write('hello remote\\n' * 200)\"",
            "outs": ["a.txt"],
        },
        "shout": {
            "cmd": (
                "python -c \"import os; os.makedirs('out', exist_ok=True); "
                "open('out/upper.txt', 'w').write(open('a.txt').read().upper()); "
                "open('out/count.txt', 'w').write(str(len(open('a.txt').read())))\""
            ),
            "deps": ["a.txt"],
            "outs": ["out"],
        },
    }
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on loopback for this module; stopped at the end."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def aws_env(tmp_path_factory):
    """Credentials come from the environment (never from a committed file); no real AWS config is read."""
    home = tmp_path_factory.mktemp("aws")
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(home / "config"), AWS_SHARED_CREDENTIALS_FILE=str(home / "credentials"),
        DVC_NO_ANALYTICS="1",
    )
    env.pop("AWS_PROFILE", None)
    return env


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def run(args: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(repo: Path, env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(DVC + list(args), repo, env, check)


def snapshot(repo: Path) -> dict[str, bytes]:
    files = [repo / "a.txt", *sorted((repo / "out").iterdir())]
    return {str(p.relative_to(repo)): p.read_bytes() for p in files}


def cache_object(repo: Path, md5: str) -> Path:
    return repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def locked_md5(repo: Path, stage: str, out: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == out)


def default_remote(repo: Path) -> str:
    match = re.search(r"^\s*remote\s*=\s*(\S+)", (repo / ".dvc" / "config").read_text(), re.MULTILINE)
    assert match, "the project's .dvc/config names no default remote"
    return match.group(1)


@pytest.fixture(scope="module")
def origin(tmp_path_factory, s3_endpoint, aws_env):
    """One repo whose pipeline ran and whose outputs were pushed; tests work on copies of it (dvc is slow to start)."""
    bucket = "ftllm-team-test"
    s3_client(s3_endpoint).create_bucket(Bucket=bucket)
    repo = tmp_path_factory.mktemp("origin") / "repo"
    repo.mkdir()
    run(["git", "init", "-q"], repo, aws_env)
    dvc(repo, aws_env, "init", "-q")
    # the project's committed DVC config: remote name, cache link types, verify
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    # a team's overrides, in the git-ignored config.local
    remote = default_remote(repo)
    (repo / ".dvc" / "config.local").write_text(f"['remote \"{remote}\"']\n    url = s3://{bucket}/store\n")
    dvc(repo, aws_env, "remote", "modify", "--local", remote, "endpointurl", s3_endpoint)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    dvc(repo, aws_env, "repro", "-q")
    dvc(repo, aws_env, "push")
    return repo, bucket, snapshot(repo)


@pytest.fixture
def pushed_repo(origin, tmp_path):
    repo, bucket, before = origin
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    return copy, bucket, before


def wipe(repo: Path) -> None:
    """What a teammate's fresh clone looks like: no cache, no outputs."""
    shutil.rmtree(repo / ".dvc" / "cache")
    (repo / "a.txt").unlink()
    shutil.rmtree(repo / "out")


def test_push_wipe_pull_round_trip(pushed_repo, aws_env):
    repo, bucket, before = pushed_repo
    assert "in sync" in dvc(repo, aws_env, "status", "--cloud").stdout
    # the endpoint and bucket went to config.local; the committed config still has the placeholders
    assert bucket not in (repo / ".dvc" / "config").read_text()
    assert bucket in (repo / ".dvc" / "config.local").read_text()

    wipe(repo)
    assert json.loads(dvc(repo, aws_env, "status", "--json").stdout)  # outputs are missing now
    dvc(repo, aws_env, "pull")
    assert json.loads(dvc(repo, aws_env, "status", "--json").stdout) == {}
    assert snapshot(repo) == before


def test_corrupted_local_cache_is_detected_and_repaired_from_remote(pushed_repo, aws_env):
    repo, _, before = pushed_repo
    md5 = locked_md5(repo, "make", "a.txt")
    obj = cache_object(repo, md5)
    assert hashlib.md5(obj.read_bytes()).hexdigest() == md5
    # DVC leaves cache objects read-only; someone forces a write anyway (with hardlinks this is also
    # what editing the workspace file in place does)
    obj.chmod(0o644)
    obj.write_bytes(b"bit rot")
    status = dvc(repo, aws_env, "status").stdout
    # DVC rehashes the object (its mtime changed), reports the output as uncached and drops the bad copy
    assert "not in cache" in status and "a.txt" in status
    assert not obj.exists()

    # repair: fetch the good object back from the remote and restore the workspace
    dvc(repo, aws_env, "fetch")
    dvc(repo, aws_env, "checkout", "--force")
    assert hashlib.md5(obj.read_bytes()).hexdigest() == md5
    assert json.loads(dvc(repo, aws_env, "status", "--json").stdout) == {}
    assert snapshot(repo) == before


def test_corrupted_remote_object_is_refused_on_pull(pushed_repo, s3_endpoint, aws_env):
    repo, bucket, before = pushed_repo
    md5 = locked_md5(repo, "make", "a.txt")
    # tamper with a copy of the remote, so the other tests keep a good one
    s3 = s3_client(s3_endpoint)
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix="store/")["Contents"]:
        key = obj["Key"].replace("store/", "tampered/", 1)
        s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": obj["Key"]})
    s3.put_object(Bucket=bucket, Key=f"tampered/files/md5/{md5[:2]}/{md5[2:]}", Body=b"tampered")
    dvc(repo, aws_env, "remote", "modify", "--local", default_remote(repo), "url", f"s3://{bucket}/tampered")
    wipe(repo)

    pulled = dvc(repo, aws_env, "pull", "-v", check=False)
    # `verify = true` in the project's remote config makes DVC rehash what it downloads
    assert pulled.returncode != 0
    log = pulled.stdout + pulled.stderr
    assert "corrupted cache file" in log and md5[2:] in log
    assert "a.txt" in log
    assert not (repo / "a.txt").exists()  # the tampered bytes never reach the workspace
    assert not cache_object(repo, md5).exists()
    # the untouched output still came through intact
    assert (repo / "out" / "upper.txt").read_bytes() == before["out/upper.txt"]
