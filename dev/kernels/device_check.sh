#!/usr/bin/env bash
# One call on the GPU machine: the CUDA test suite, compute-sanitizer (memcheck, racecheck) on
# the small shapes, and bench/gsa.py next to fla. Binaries are built on the development machine
# (nvcc there, sm_90a) and carried in BIN; they find the GPU machine's torch through
# LD_LIBRARY_PATH. Logs and JSON lines go to $OUT.
#   bash dev/kernels/device_check.sh BIN [tests|sanitize|bench|all] [COMMIT]
set -uo pipefail
bin=${1:-.device}
what=${2:-all}
commit=${3:-unknown}
out=${OUT:-/tmp/lintime-device}
mkdir -p "$out"
for packed in "$bin"/*.xz; do [[ -e $packed ]] && xz -d -f "$packed"; done  # carried compressed
torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
if [[ $what == all || $what == tests ]]; then
  timeout 400 "$bin/test_gsa_cuda" --gtest_filter='-GsaCudaSanitizer.*' > "$out/tests.log" 2>&1
  echo "tests exit $?"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|error:" "$out/tests.log" | head -40
fi
if [[ $what == all || $what == sanitize ]]; then
  for tool in memcheck racecheck; do
    timeout 300 compute-sanitizer --tool "$tool" --error-exitcode 9 "$bin/test_gsa_cuda" \
      --gtest_filter='GsaCudaSanitizer.*' > "$out/$tool.log" 2>&1
    echo "$tool exit $?: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/$tool.log" | tail -1)"
  done
fi
if [[ $what == all || $what == bench ]]; then
  # fla's Triton kernels compile on first use: on a fresh machine its autotuning took the whole
  # 540 s of a call (2026-11-23). The compiled kernels go to .triton-cache (carry it to reuse
  # them) and come back as $OUT/triton-cache.tgz (unpack into .triton-cache for the next call).
  export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$PWD/.triton-cache}
  mkdir -p "$TRITON_CACHE_DIR"
  FLA_PATH=${FLA_PATH:-.fla} timeout "${BENCH_TIMEOUT:-500}" python3 bench/gsa.py --library "$bin/liblintime_ops.so" \
    --jsonl "$out/bench.jsonl" --commit "$commit" ${BENCH_ARGS:-} > "$out/bench.log" 2>&1
  echo "bench exit $?"
  tar -C "$TRITON_CACHE_DIR" -czf "$out/triton-cache.tgz" . && ls -la "$out/triton-cache.tgz"
  tail -60 "$out/bench.log"
fi
if [[ $what == ab ]]; then
  # Two builds or settings in the same call, interleaved (A B A B): run A takes the library
  # AB_LIBRARY (default: the same one; AB_COMMIT labels it) with the environment setting AB_ENV
  # (e.g. LINTIME_UNFUSED=epilogues), run B the library in BIN as it is. fla left out.
  for round in 1 2; do
    for side in A B; do
      library="$bin/liblintime_ops.so"; setting=; label=$commit
      if [[ $side == A ]]; then library=${AB_LIBRARY:-$library}; setting=${AB_ENV:-}; label=${AB_COMMIT:-$commit}; fi
      env $setting python3 bench/gsa.py --library "$library" --skip-fla --no-decode \
        --jsonl "$out/ab-$side.jsonl" --commit "$label${setting:+ ($setting)}" ${BENCH_ARGS:-} \
        > "$out/ab-$side-$round.log" 2>&1
      echo "round $round, $side ($library ${setting:-}): exit $?"
      grep -E "^\|" "$out/ab-$side-$round.log" | head -20
    done
  done
  python3 dev/kernels/ab_table.py "$out/ab-A.jsonl" "$out/ab-B.jsonl" | tee "$out/ab.md"
fi
if [[ $what == bytes ]]; then
  # DRAM bytes, time, registers and occupancy of every kernel of one forward+backward at each of
  # the bench's shapes in BYTES_SHAPES (indices), tabulated by dev/kernels/kernel_bytes.py.
  for shape in ${BYTES_SHAPES:-0 1}; do
    timeout 240 ncu --csv --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active \
      python3 dev/kernels/kernel_bytes.py --library "$bin/liblintime_ops.so" --shape "$shape" > "$out/bytes-$shape.csv" 2> "$out/bytes-$shape.err"
    echo "shape $shape: ncu exit $?"
    python3 dev/kernels/kernel_bytes.py --table "$out/bytes-$shape.csv" | tee "$out/bytes-$shape.md"
  done
fi
if [[ $what == ncu ]]; then
  # Stall reasons, occupancy and throughput of the kernels named in NCU_KERNELS (regex), on the
  # bench's shape NCU_SHAPE (index into bench/gsa.py's CHUNK_SHAPES).
  timeout 500 ncu --kernel-name-base demangled -k "regex:${NCU_KERNELS:-state_kernel}" -c "${NCU_COUNT:-4}" \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section MemoryWorkloadAnalysis \
    python3 bench/gsa.py --library "$bin/liblintime_ops.so" --skip-fla --no-decode \
    --shapes "${NCU_SHAPE:-0}" > "$out/ncu.log" 2>&1
  echo "ncu exit $?"
  grep -E "^  [a-z_:<>, 0-9A-Za-z]+\(|Duration|Achieved Occupancy|Theoretical Occupancy|Registers Per|Shared Memory Config|Block Limit|Stall|Memory Throughput|Compute \(SM\)|Warp Cycles Per Issued|Issued Warp" "$out/ncu.log" | head -120
fi
if [[ $what == source ]]; then
  # Per-source-line stall samples of one kernel (binaries built with -lineinfo): NCU_KERNELS regex.
  timeout 500 ncu --kernel-name-base demangled -k "regex:${NCU_KERNELS:-backward_keys_state}" -c 1 \
    --set full --import-source yes -o /tmp/lintime-source -f \
    python3 bench/gsa.py --library "$bin/liblintime_ops.so" --skip-fla --no-decode \
    --shapes "${NCU_SHAPE:-0}" > "$out/ncu-source.log" 2>&1
  echo "ncu exit $?"
  ncu --import /tmp/lintime-source.ncu-rep --page source --csv --print-source cuda > "$out/source.csv" 2>&1
  ncu --import /tmp/lintime-source.ncu-rep --page details > "$out/details.txt" 2>&1
  ls -la "$out"
fi
