#!/usr/bin/env bash
# Training-throughput call on the GPU machine (issue 19): `lintime bench train` of a new binary
# (BIN) against a base binary (BASE) interleaved in one call, the anchors (Hugging Face's Llama
# with SDPA, fla's GSAForCausalLM from a fla checkout in FLA) and a kernel profile, in the order
# asked. Binaries come from `make device-pack` (sm_90a, xz), BASE holding only its lintime.xz.
# fla's Triton cache lives in $PWD/.triton-cache (carry it to skip autotuning; it comes back as
# $OUT/triton-cache.tar.xz). Logs and JSON lines go to $OUT.
#   bash dev/training/train_device.sh BIN BASE "tests ab fla profile" [COMMIT]
#   tests: BIN's CUDA tests (TEST_FILTER)    ab: ROUNDS rounds of base then new, SHAPES (8x2048,2x8192)
#   fla: bench/train_hf.py with HF Llama and fla's GSA
#   profile: the new binary with --profile-kernels 45, once per shape of PROFILE_SHAPES (8x2048)
set -uo pipefail
bin=${1:-.device}
base=${2:-.device-base}
what=${3:-ab}
commit=${4:-unknown}
out=${OUT:-/tmp/lintime-device}
shapes=${SHAPES:-8x2048,2x8192}
source "$(dirname "$0")/../device_call.sh" "$bin" "$base"
bench() {  # label binary extra-args...
  local label=$1 binary=$2; shift 2
  timeout "${BENCH_LIMIT:-200}" "$binary" bench train --device cuda --arch gsa --shapes "$shapes" --steps 5 \
    --master-weights false --jsonl "$out/train_$label.jsonl" "$@" > "$out/train_$label.log" 2>&1
  since "bench $label exit $?"; grep -E "tok|GiB" "$out/train_$label.log" | tail -n 4
}

if has tests; then
  timeout "${TEST_LIMIT:-200}" "$bin"/lintime_cuda_tests --gtest_filter="${TEST_FILTER:-*}" > "$out/cuda_tests.log" 2>&1
  since "cuda tests exit $?: $(grep -cE '^\[       OK \]' "$out/cuda_tests.log") ok, $(grep -cE '^\[  FAILED  \]' "$out/cuda_tests.log") failed lines"
  grep -E "^\[  FAILED  \]|Failure$|swiglu_linear graph" "$out/cuda_tests.log" | head -8
fi
if has ab; then
  for round in $(seq 1 "${ROUNDS:-2}"); do
    bench "base_r$round" "$base/lintime"
    bench "new_r$round" "$bin/lintime"
  done
fi
if has fla; then
  export TRITON_CACHE_DIR=$PWD/.triton-cache
  mkdir -p "$TRITON_CACHE_DIR"
  timeout "${FLA_LIMIT:-400}" python3 bench/train_hf.py --fla "${FLA:-.fla}" --shapes "$shapes" --steps 8 --warmup 2 \
    --jsonl "$out/train_hf.jsonl" > "$out/train_hf.log" 2>&1
  since "train_hf exit $?"; grep '"bench"' "$out/train_hf.log" | cut -c1-400; tail -n 3 "$out/train_hf.log"
  tar -C "$PWD" -cf - .triton-cache | xz -T0 -3 > "$out/triton-cache.tar.xz"
fi
if has profile; then
  for shapes in ${PROFILE_SHAPES:-8x2048}; do
    bench "profile_$shapes" "$bin/lintime" --profile-kernels 45
  done
fi
# One archive of the logs and JSON lines (a call brings back a limited number of files).
(cd "$out" && tar -czf results.tgz --remove-files $(ls *.log *.jsonl 2>/dev/null))
