# Team workflow: the pinned GPU container, the DVC remote, the submission image. Included by the Makefile
# (`include mk/*.mk`), which defines PYTHON and DVC; the fallbacks below let `make -f mk/team.mk` work alone.
# docs/team.md walks through these targets.

PYTHON ?= .venv/bin/python
DVC ?= .venv/bin/dvc
UV ?= .venv/bin/uv

IMAGE ?= ftllm:gpu
DOCKERFILE ?= Dockerfile
# named volumes: the DVC cache and downloaded weights outlive every container
DVC_CACHE_VOLUME ?= ftllm-dvc-cache
HF_CACHE_VOLUME ?= ftllm-hf-cache
GPUS ?= all
# extra arguments for `dvc repro` in the container, e.g. REPRO_ARGS="--pull predict@final"
REPRO_ARGS ?=
# extra arguments for pull/push, e.g. DVC_TARGETS=models/rl
DVC_TARGETS ?=

SUBMISSION_MODEL ?= models/rl
SUBMISSION_NAME ?=
# baked as /app/params.yaml: its `predict` section is what the submission runs
SUBMISSION_PARAMS ?= params.yaml
BUILD_DIR ?= build

# The lock is resolved for the container, not for this machine: CPython 3.12 on glibc 2.39 (Ubuntu 24.04).
LOCK_TARGET = --python-version 3.12.3 --python-platform x86_64-manylinux_2_39 --no-python-downloads

.PHONY: lock docker-pin docker-build docker-repro pull push submission-def submission-image

## lock: re-resolve requirements/{gpu,build}.lock.txt with hashes from pyproject.toml (the `gpu` extra)
lock:
	$(UV) pip compile pyproject.toml --extra gpu --generate-hashes $(LOCK_TARGET) \
		--custom-compile-command "make lock" -o requirements/gpu.lock.txt
	$(UV) pip compile requirements/build.in -c requirements/gpu.lock.txt --generate-hashes $(LOCK_TARGET) \
		--custom-compile-command "make lock" -o requirements/build.lock.txt

## docker-pin: look up the base tag's current digest in the registry and write it into the Dockerfile
docker-pin:
	@ref=$$(sed -n 's/^FROM \([^@ ]*\).*/\1/p' $(DOCKERFILE) | head -n 1); \
	digest=$$(docker buildx imagetools inspect "$$ref" --format '{{json .Manifest.Digest}}' | tr -d '"'); \
	case "$$digest" in sha256:*) ;; *) echo "could not resolve a digest for $$ref" >&2; exit 1;; esac; \
	sed -i "s|^FROM $$ref@sha256:[0-9a-f]*|FROM $$ref@$$digest|" $(DOCKERFILE); \
	echo "pinned $$ref@$$digest; review and commit $(DOCKERFILE)"

## docker-build: build the GPU image (refuses while the base digest is the all-zero placeholder)
docker-build:
	@if grep -Eq '^FROM .*@sha256:0{64}' $(DOCKERFILE); then \
		echo "$(DOCKERFILE): the base image digest is still the all-zero placeholder; run 'make docker-pin' where the registry is reachable, then commit" >&2; \
		exit 1; fi
	DOCKER_BUILDKIT=1 docker build -f $(DOCKERFILE) -t $(IMAGE) \
		--label org.opencontainers.image.revision=$$(git rev-parse HEAD) .

## docker-repro: `dvc repro` in the container with every GPU, this repo at /workspace, caches on volumes.
## Runs as your uid so outputs in the repo stay yours; tokens pass by name from your environment only.
docker-repro:
	docker run --rm --gpus $(GPUS) --ipc=host --ulimit memlock=-1 --ulimit stack=67108864 \
		--user "$$(id -u):$$(id -g)" \
		-v "$(CURDIR):/workspace" -w /workspace \
		-v $(DVC_CACHE_VOLUME):/cache/dvc -v $(HF_CACHE_VOLUME):/cache/huggingface \
		-e PYTHONPATH=/workspace/src \
		-e GIT_CONFIG_COUNT=1 -e GIT_CONFIG_KEY_0=safe.directory -e GIT_CONFIG_VALUE_0=/workspace \
		-e HF_TOKEN \
		$(IMAGE) dvc repro $(REPRO_ARGS)

## pull / push: fetch or share pipeline outputs through the default DVC remote (.dvc/config + config.local)
pull:
	$(DVC) pull $(DVC_TARGETS)

push:
	$(DVC) push $(DVC_TARGETS)

## submission-def: render build/ftllm.def for SUBMISSION_MODEL (default models/rl)
submission-def:
	$(PYTHON) -m ftllm.submission_image render --model $(SUBMISSION_MODEL) \
		$(if $(SUBMISSION_NAME),--name $(SUBMISSION_NAME)) --params $(SUBMISSION_PARAMS) \
		--base-archive $(BUILD_DIR)/ftllm-image.tar --out $(BUILD_DIR)/ftllm.def

## submission-image: docker image -> archive -> Apptainer image build/ftllm.sif with the checkpoint baked in
submission-image: docker-build submission-def
	@command -v apptainer >/dev/null || { echo "apptainer is not installed on this machine" >&2; exit 1; }
	mkdir -p $(BUILD_DIR)
	docker save -o $(BUILD_DIR)/ftllm-image.tar $(IMAGE)
	apptainer build --force $(BUILD_DIR)/ftllm.sif $(BUILD_DIR)/ftllm.def
