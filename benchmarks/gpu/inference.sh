#!/usr/bin/env bash
# On a lent GPU box after the vLLM parts arrived (../shared/gpu/README.md): install vLLM 0.26.0 and the small
# wheels, build a random Llama-3.2-1B-shaped checkpoint, run the engine-bound benchmarks on it.
set -uo pipefail
bash .gpu/install-vllm.sh || exit 3
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl-slim/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 \
  VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_WORKER_MULTIPROC_METHOD=spawn
out=${OUT:-benchmarks/results}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m ftllm.tiny /tmp/llama1b 16 2048 32 8 8192 || exit 4
for bench in "$@"; do
  case "$bench" in
    generate) timeout 240 python3 benchmarks/generate_vs_engine.py --model /tmp/llama1b --units 8 --difficulties 5 \
                --samples-per-cell 8 --shard-size 160 --max-new-tokens 512 --max-model-len 2048 \
                --out "$out/generate_vs_engine.json" 2>&1 | grep -vE "INFO|it/s" | tail -30 ;;
    predict) timeout 400 python3 benchmarks/predict_overhead.py --model /tmp/llama1b --dtype bfloat16 --problems 8 \
                --n 160 --max-new-tokens 256 --max-model-len 2048 --parse-workers 14 --repeats 2 --ablate-logprobs --compare-overlap \
                --out "$out/predict_overhead.json" 2>&1 | grep -vE "INFO|it/s" | tail -30 ;;
    predict-large) timeout 420 python3 benchmarks/predict_overhead.py --model /tmp/llama1b --dtype bfloat16 \
                --problems 32 --n 160 --max-new-tokens 256 --max-model-len 2048 --parse-workers 14 --repeats 2 --ablate-scoring \
                --out "$out/predict_overhead_32.json" 2>&1 | grep -vE "INFO|it/s" | tail -30 ;;
    rl) timeout 200 python3 benchmarks/rl_throughput.py --model /tmp/llama1b --use-vllm --dtype bfloat16 --steps 4 \
                --num-generations 8 --max-completion-length 256 --out "$out/rl_throughput.json" 2>&1 \
                | grep -vE "INFO|it/s" | tail -30 ;;
  esac
done
