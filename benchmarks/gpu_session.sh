#!/usr/bin/env bash
# The prepared GPU session of issue 22, for the lent H200 (device tool), in one call:
#   tests on CUDA, inference throughput, the stages of rrnet-infer, training throughput.
# Needs on the GPU machine: python3 with torch, numpy, safetensors, scipy,
# threadpoolctl and pytest (all on its image); the Rust extension built here as abi3
# and carried (python/rrnet/_core.abi3.so, git-ignored); the authors' RRNet fixture
# under $RRNET_SHARED/fixtures/original_rrnet (carried, e.g. in an ignored .gpu/).
# The timeouts add up to 550 s, inside a call's 600 s. Results go to $OUT: JSON on
# stdout, logs (warnings, compile messages) on stderr beside it.
set -u
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=python RRNET_SHARED=${RRNET_SHARED:-../shared}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda, "python", sys.version.split()[0])'
  timeout 90 python3 -m pytest -p no:cacheprovider --noconftest -W default -q -s -rA \
    tests/models/test_cuda.py
} > "$OUT/tests.log" 2>&1
timeout 150 python3 benchmarks/gpu_infer.py --budget-s 90 > "$OUT/infer.json" 2> "$OUT/infer.log"
timeout 45 python3 benchmarks/gpu_infer_stages.py > "$OUT/stages.json" 2>> "$OUT/run.log"
timeout 75 python3 benchmarks/gpu_infer_stages.py --compile > "$OUT/stages_compile.json" \
  2>> "$OUT/run.log"
for formulation in vmap grouped; do
  timeout 40 python3 benchmarks/gpu_train.py --n 20000 --epochs 2 --no-compile \
    --formulation "$formulation" > "$OUT/train_$formulation.json" 2>> "$OUT/run.log"
done
# The paper's recipe at full size (80,000 spectra, 6 members, batch 256), compiled:
timeout 110 python3 benchmarks/gpu_train.py --n 80000 --epochs 2 > "$OUT/train_paper.json" \
  2>> "$OUT/run.log"
echo "session done" >> "$OUT/tests.log"
