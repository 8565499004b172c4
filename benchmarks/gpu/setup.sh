#!/usr/bin/env bash
# On a lent GPU box (offline; torch 2.11+cu130 and transformers 5.17 in the image), from the project root, with the
# last parts carried. Earlier calls only stash their part: `mkdir -p /tmp/parts && cp .vllm-parts[0-9]*/* .gpu-parts[0-9]*/* /tmp/parts/`.
# Installs vLLM 0.26.0 (../shared/gpu) and the project's own extra wheels (benchmarks/gpu/fetch-wheels.sh) into
# /tmp/site. Afterwards: `source benchmarks/gpu/env.sh`.
set -uo pipefail
mkdir -p /tmp/parts && cp -f .vllm-parts[0-9]*/* .gpu-parts[0-9]*/* /tmp/parts/ 2>/dev/null
cd /tmp/parts || exit 3
sha256sum -c --quiet SHA256SUMS EXTRA_SHA256SUMS || { echo "parts missing or corrupt: send all parts again" >&2; ls -l; exit 3; }
mkdir -p /tmp/wheels
cat $(awk '{print $2}' SHA256SUMS) | tar -xf - -C /tmp/wheels || exit 4
cat $(awk '{print $2}' EXTRA_SHA256SUMS) | tar -xf - -C /tmp/wheels || exit 4
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/wheels/*.whl 2>&1 \
  | grep -v 'already exists'
# Bytecode once, on every core: on the H200, generate spent 53 s importing vLLM and checking the model before its
# engine started, and each spawned process imports the carried packages again.
start=$(date +%s)
python3 -m compileall -q -j 0 /tmp/site >/dev/null 2>&1
echo "bytecode compiled in $(( $(date +%s) - start )) s (PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-unset})"
cd - >/dev/null
source benchmarks/gpu/env.sh
python3 -c "import torch, transformers, vllm, trl, dvc; print('torch', torch.__version__, '| transformers', transformers.__version__, '| vllm', vllm.__version__, '| trl', trl.__version__)"
