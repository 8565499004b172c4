# ftllm GPU image: CUDA 13.0 runtime, Python 3.12 and the hash-locked GPU flavour of the project
# (torch 2.11.0 built for CUDA 13, vLLM 0.26.0, transformers 5.17.0; see requirements/gpu.lock.txt).
#
#   make docker-build     # docker build -t ftllm:gpu .
#   make docker-repro     # dvc repro inside it, all GPUs, this repo bind-mounted at /workspace
#
# The base is pinned by tag AND digest: the tag says what it is, the digest makes it immutable (a tag the
# publisher re-points cannot change the image under us). The digest is the published one for this tag, as
# public projects pin it; `make docker-pin` re-resolves the tag where a registry is reachable and rewrites
# this line, to be reviewed and committed.
FROM nvidia/cuda:13.0.2-runtime-ubuntu24.04@sha256:6a0e31b59e70890446f2c17356d6efc0d54260090a8c63d6ca7c2ad049db95d2

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Ubuntu 24.04's python3.12 is the interpreter the lock is resolved for. gcc, libc6-dev and the Python
# headers are there because Triton (used by vLLM and flashinfer) compiles small launcher stubs at run
# time; git because DVC drives it; bubblewrap is TIR's sandbox (it needs user namespaces, so the container
# must run with a seccomp profile that allows them). No version pins here (DL3008): Ubuntu's archive drops superseded
# versions, so exact pins would break the build within weeks. None of these packages computes results;
# everything that does is hash-pinned in the lock file below.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        bubblewrap ca-certificates gcc git libc6-dev python3.12 python3.12-dev python3.12-venv \
    && rm -rf /var/lib/apt/lists/*

# A non-root user. The ubuntu base already owns uid 1000 under the name "ubuntu"; hand that uid to ftllm
# so files written into a bind-mounted repo match the usual first user of a host.
RUN if id ubuntu >/dev/null 2>&1; then userdel --remove ubuntu 2>/dev/null || true; fi \
    && useradd --create-home --uid 1000 --shell /bin/bash ftllm

# Caches live under /cache so `docker run -v NAME:/cache/...` keeps them on volumes: model weights
# (HF_HOME), compiled kernels (Triton, vLLM) and the DVC cache. World-writable with the sticky bit
# because `make docker-repro` runs as the host user's uid (so outputs in the repo belong to that user),
# which need not be 1000.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/ftllm \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/cache/huggingface \
    XDG_CACHE_HOME=/cache/xdg \
    TRITON_CACHE_DIR=/cache/triton \
    VLLM_CACHE_ROOT=/cache/vllm \
    HF_HUB_DISABLE_TELEMETRY=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
RUN mkdir -p /cache/huggingface /cache/xdg /cache/triton /cache/vllm /cache/dvc /workspace /app/models /app/submission \
    && chmod 1777 /cache /cache/huggingface /cache/xdg /cache/triton /cache/vllm /cache/dvc /home/ftllm

# Dependencies first (a layer that changes only when the lock does). setuptools goes in first, from its
# own hashed lock, so the one sdist in gpu.lock.txt (antlr4-python3-runtime 4.9.3, pure Python, no wheel)
# builds with --no-build-isolation instead of fetching an unhashed build backend. --no-deps: the lock is
# the complete set; `pip check` proves it.
COPY requirements/build.lock.txt requirements/gpu.lock.txt /tmp/requirements/
RUN python3.12 -m venv /opt/venv \
    && pip install --require-hashes --no-deps -r /tmp/requirements/build.lock.txt \
    && pip install --require-hashes --no-deps --no-build-isolation -r /tmp/requirements/gpu.lock.txt \
    && pip check \
    && rm -rf /tmp/requirements

# The project itself, installed the way `make install` does but without pulling anything new. A regular
# (non-editable) install so the submission image built on top runs on its own; `make docker-repro` puts
# the bind-mounted /workspace/src first on PYTHONPATH so the pipeline runs the code DVC hashes.
COPY pyproject.toml /opt/ftllm/pyproject.toml
COPY src /opt/ftllm/src
RUN pip install --no-deps --no-build-isolation --no-index /opt/ftllm \
    && python -c "import ftllm, torch, vllm, transformers" \
    && rm -rf /opt/ftllm/build

# DVC's cache goes to the /cache/dvc volume for every repo mounted here (system level, so the repo's own
# .dvc/config, shared with hosts outside the container, stays untouched); so does its file-hash index,
# otherwise every new container would re-hash multi-GB checkpoints. The repo is owned by the host user,
# not by whoever runs in here: mark it safe for git (and libgit2, which reads the same file).
RUN dvc config --system cache.dir /cache/dvc \
    && dvc config --system core.site_cache_dir /cache/dvc/site \
    && dvc config --system core.analytics false \
    && git config --system --add safe.directory /workspace

# Tokens (HF_TOKEN, AWS_*) are never baked in: pass them at run time (`docker run -e HF_TOKEN`), or keep
# DVC credentials in the mounted repo's .dvc/config.local. A build that ever needs one uses a BuildKit
# secret: RUN --mount=type=secret,id=hf_token,env=HF_TOKEN ...
# Numeric uid (ftllm's, created above) so Kubernetes-style runAsNonRoot checks can verify it.
USER 1000:1000
WORKDIR /workspace
CMD ["bash"]
