#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU, a CUDA build of torch, Triton,
# numpy and pytest preinstalled, and no internet. Builds the extension in place (no
# dependency installs), runs the CUDA tests and the kernel benchmarks, and writes
# everything to OUT_DIR. Usage: bash bench/gpu_check.sh OUT_DIR   (at most about 10 minutes: each step has a timeout)
set -uo pipefail
out=${1:?usage: bash bench/gpu_check.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SECONDS=0
step() { echo "== [${SECONDS}s] $*" | tee -a "$out/steps.txt"; }

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} SPSR_FAST_CUDA=1 MAX_JOBS=${MAX_JOBS:-16}

step "build spsr_fast._C in place (CPU + CUDA kernels)"
if ! $PY setup.py build_ext --inplace > "$out/build.log" 2>&1; then
  tail -60 "$out/build.log"; exit 1
fi
# An installed spsr-fast maps kernels/ to spsr_fast._triton; in place, a link does.
ln -sfn ../kernels spsr_fast/_triton
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
$PY -m spsr_fast.cli doctor 2>&1 | tee "$out/doctor.txt"

step "kernel tests on the GPU (CUDA-marked tests and the Triton kernels on CUDA tensors)"
op_tests=$(ls tests/test_gradient_map.py tests/test_info_nce*.py tests/test_dense_block*.py tests/test_inference_runner.py 2>/dev/null)
timeout 180 $PY -m pytest -q -x $op_tests 2>&1 | tail -40 | tee "$out/tests.txt"

step "kernel benchmarks"
PYTHONUNBUFFERED=1 timeout 120 $PY bench/kernels.py --device cuda --op gradient_map --op info_nce --op rrdb \
  --json "$out/kernels.json" 2>&1 | tee "$out/kernels.txt"

step "whole networks: RRDBNet / SPSRNet inference, eager vs torch.compile vs fused"
PYTHONUNBUFFERED=1 timeout 180 $PY bench/kernels.py --device cuda --op rrdb_models --json "$out/models.json" 2>&1 \
  | tee "$out/models.txt"

step "inference throughput (x4, fused + channels_last + bf16 vs reference)"
PYTHONUNBUFFERED=1 timeout 90 $PY bench/infer.py --device cuda --json "$out/infer.json" 2>&1 | tee "$out/infer.txt"

step "SPSR-G training step"
PYTHONUNBUFFERED=1 timeout 90 $PY bench/train_step.py --device cuda --json "$out/train_step.json" 2>&1 \
  | tee "$out/train_step.txt"
step "done"
