#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU: builds the extension in place, runs
# every CUDA-marked test and every Triton kernel test on CUDA tensors, then the benchmarks in
# order of value, and prints one summary table. Needs a CUDA build of torch, Triton, nvcc,
# ninja and pytest already installed; installs nothing and needs no network.
#
#   bash bench/gpu_check.sh OUT_DIR
#
# Fits an 8-minute GPU loan, build included: every step runs under its own time limit and
# the limits add up to 475 s. Steps that run out of time or fail are recorded and the next
# step still runs. Everything lands under OUT_DIR as JSON (steps.jsonl, env.json, tests.jsonl,
# kernels.json, models.json, train_step.json, summary.json) next to each step's log.
#
# Time limits (seconds) and why:
#   env 15      GPU name, versions, copy bandwidth
#   build 120   10 translation units, sm_<this GPU> only; measured one at a time on one core
#               (Zen 5): the slowest is gradient_map_cuda.cu at 36 s CPU, all of them 184 s
#               CPU. With MAX_JOBS=16 they all compile at once: ~40 s wall on an equal core,
#               ~60 s on a slower server core, plus ~15 s of setup.py (torch import, nvcc
#               probes) and linking.
#   doctor 15   which backend each op takes
#   tests 140   ~470 tests, in parallel (pytest-xdist when present): Triton compiles dominate
#   kernels 95  gradient_map (vs copy bandwidth and torch.compile), rrdb block (vs torch.cat
#               eager and torch.compile), info_nce: --quick shapes, each record saved as it is measured
#   network 45  RRDBNet nb=23 bf16 inference, 256x256: torch.cat eager vs native vs triton
#               (no torch.compile: compiling the whole network alone takes minutes)
#   train 40    SPSR-G training step, paper model, reference vs fused
#   summary 5
set -uo pipefail
out=${1:?usage: bash bench/gpu_check.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SECONDS=0
: > "$out/steps.jsonl"

# run_step NAME LIMIT COMMAND...: runs COMMAND under LIMIT seconds, output to OUT/NAME.log,
# its status to OUT/steps.jsonl; on failure the log's tail is shown.
run_step() {
  local name=$1 limit=$2 start=$SECONDS rc status
  shift 2
  echo "== [${SECONDS}s] $name (limit ${limit}s)"
  timeout --kill-after=5 "$limit" "$@" > "$out/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status=failed ;;
  esac
  printf '{"step": "%s", "status": "%s", "rc": %d, "seconds": %d, "timeout": %d}\n' \
    "$name" "$status" "$rc" $((SECONDS - start)) "$limit" >> "$out/steps.jsonl"
  if [ "$status" != ok ]; then
    echo "   $status (exit $rc); last lines of $out/$name.log:"
    tail -15 "$out/$name.log" | sed 's/^/   | /'
  fi
}

export PYTHONUNBUFFERED=1
run_step env 15 $PY - "$out/env.json" <<'EOF'
import json, sys
import torch, triton
assert torch.cuda.is_available(), "torch sees no CUDA device"
src = torch.empty(256 * 2 ** 20, dtype=torch.float32, device="cuda")
dst = torch.empty_like(src)
for _ in range(3):
    dst.copy_(src)
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
start.record()
for _ in range(10):
    dst.copy_(src)
end.record()
end.synchronize()
env = {"gpu": torch.cuda.get_device_name(), "capability": "%d.%d" % torch.cuda.get_device_capability(),
       "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton.__version__,
       "python": sys.version.split()[0], "copy_gbps": 10 * 2 * src.numel() * 4 / (start.elapsed_time(end) * 1e-3) / 1e9}
json.dump(env, open(sys.argv[1], "w"), indent=1)
print(env)
EOF

capability=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null)
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-${capability:-9.0}}
export SPSR_FAST_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}
command -v ninja > /dev/null || $PY -c "import ninja" 2> /dev/null \
  || echo "   warning: no ninja: the build compiles one file at a time and will not fit its limit"
run_step build 120 $PY setup.py build_ext --inplace

# Installed, spsr-fast maps kernels/ to spsr_fast._triton; in place, a link does.
ln -sfn ../kernels spsr_fast/_triton
export PYTHONPATH=$PWD:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}
run_step doctor 15 $PY -m spsr_fast.cli doctor

parallel=()
$PY -c "import xdist" 2> /dev/null && parallel=(-n "$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))")
per_test=()
$PY -c "import pytest_timeout" 2> /dev/null && per_test=(--timeout=100)
: > "$out/tests.jsonl"
# cuda-marked tests and the Triton ones (on CUDA tensors when a GPU is present); the sm_90
# compile tests need no GPU and run in CI. A test file that cannot be imported here (an
# optional package missing) costs its own tests only.
SPSR_TEST_RESULTS=$out/tests.jsonl run_step tests 140 $PY -m pytest -q -p no:cacheprovider \
  --continue-on-collection-errors -p pytest_json_results "${parallel[@]}" "${per_test[@]}" \
  tests -k "(cuda or triton) and not sm90"

run_step kernels 95 $PY bench/kernels.py --device cuda --quick --op gradient_map --op rrdb --op info_nce \
  --json "$out/kernels.json"
run_step network 45 $PY bench/kernels.py --device cuda --quick --no-compile --op rrdb_models \
  --json "$out/models.json"
run_step train 40 $PY bench/train_step.py --device cuda --rounds 2 --steps 2 --json "$out/train_step.json"

echo "== [${SECONDS}s] summary"
timeout 5 $PY bench/gpu_summary.py "$out"
echo "== done in ${SECONDS}s; logs and JSON in $out"
