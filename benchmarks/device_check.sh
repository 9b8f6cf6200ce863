#!/usr/bin/env bash
# The GPU figures of issue 5 in one run, for a session that is lent a device (an H200 with no network
# and no diffusers). Prepare the wheels HERE, once, in the repo root:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d .whl diffusers==0.42.1 transformers==5.23.0 importlib_metadata
#
# then run this script THERE with `.whl` carried:  bash benchmarks/device_check.sh
# (about 20 MB of wheels; the device already has torch, huggingface_hub, safetensors, tokenizers,
# scikit-image, matplotlib and psutil). Figures land in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/faceanon-device}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
# fp16 against the reference formulation in fp32 (the 3x target), 512x512, 25 steps, 6 faces.
timeout 420 python3 -m faceanon.bench --device cuda --dtype fp16 --json "$OUT/bench_fp16.json" 2>&1 | tee "$OUT/bench_fp16.txt"
# bf16, faceanon only (quick).
timeout 120 python3 -m faceanon.bench --device cuda --dtype bf16 --skip-reference --faces 0 \
    --json "$OUT/bench_bf16.json" 2>&1 | tee "$OUT/bench_bf16.txt"
