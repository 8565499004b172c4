# Environment for every run on the GPU box after benchmarks/gpu/setup.sh (source it from the project root).
export PYTHONPATH=/tmp/site:$PWD/src PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
  TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 VLLM_USE_FLASHINFER_SAMPLER=0 \
  VLLM_WORKER_MULTIPROC_METHOD=spawn DVC_NO_ANALYTICS=1 POT_BACKEND_DISABLE_JAX=1 \
  NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# dvc.yaml's commands call `python`; the image has only `python3` (a wrapper, not a symlink: a symlinked venv
# interpreter does not find its venv's site-packages)
mkdir -p /tmp/bin && printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" > /tmp/bin/python && chmod +x /tmp/bin/python
export PATH=/tmp/bin:$PATH
# the box's copy of the tree has no trustworthy .git: `benchmarks/gpu/stamp.sh` wrote the commit beside the code
[ -f .code-version ] && export FTLLM_CODE_VERSION="$(cat .code-version)"
