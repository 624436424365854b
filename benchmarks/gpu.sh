#!/usr/bin/env bash
# The GPU figures of docs/PERFORMANCE.md, each benchmark's output also written to a log in OUT.
#
#   bash benchmarks/gpu.sh [OUT]        (OUT defaults to gpu-figures/; run from the repository root)
#
# 1. brats_africa_128 training (batch 4, bf16 autocast) at 64^3 and 128^3: volumes/s, share of
#    the GPU's Conv3d and matrix-product rates, peak GPU memory; generation at 128^3.
# 2. One 128^3 training step profiled: GPU kernel time by kind of op against the step's wall time.
# 3. The x2 resampling at the 128^3 step's shapes: torch's kernels against the ones the GPU uses.
# 4. The GPU tests: nccl collectives (one rank; two ranks where two GPUs are there), resume on a GPU.
# 5. SyntheticAugmenter generating on the GPU, against torchio's transforms on the CPU.
# Each part has its own time limit, so one that fails or runs long leaves the others' figures.
set -u
OUT=${1:-gpu-figures}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
part() {  # part NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    echo "== $name: exit ${PIPESTATUS[0]}"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
part gan_throughput 240 python3 benchmarks/gan_throughput.py --device cuda --recipe brats_africa_128 \
    --shapes 64 128 --gen-shapes 128 --steps 5
part step_profile 120 python3 benchmarks/step_profile.py --device cuda --recipe brats_africa_128 --shape 128 --table 30 --by-shape
part resampling 60 python3 benchmarks/resampling.py --device cuda
part gpu_tests 90 python3 -m pytest -q -p no:cacheprovider tests/training/test_distributed.py tests/training/test_loop.py -k "nccl or gpu" -rs
part augmenter_cost 120 python3 benchmarks/augmenter_cost.py --device cuda --precision auto fp32 --subjects 16
