#!/usr/bin/env bash
# On a lent GPU box (torch + transformers in the image, no trl/datasets/POT): install the carried wheels,
# then run one training benchmark. Usage: bash benchmarks/gpu/training.sh sft_mfu|sft_stage_mfu|upscale_time
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
out=${OUT:-benchmarks/results}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
case "$1" in
  sft_mfu) python3 benchmarks/sft_mfu.py --out "$out/sft_mfu.json" 2>&1 | tee "$out/sft_mfu.log" ;;
  sft_stage_mfu) python3 benchmarks/sft_stage_mfu.py --out "$out/sft_stage_mfu.json" 2>&1 | tee "$out/sft_stage_mfu.log" ;;
  upscale_time) python3 benchmarks/upscale_time.py --out "$out/upscale_time.json" 2>&1 | tee "$out/upscale_time.log" ;;
esac
