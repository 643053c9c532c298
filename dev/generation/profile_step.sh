#!/usr/bin/env bash
# Where a decode step's time goes: Nsight Compute times every kernel of the last decode steps
# of `lintime bench generate` (--profile-steps opens the range; everything before it, weight
# init and prefill included, is not profiled) and prints the kernels summed by name.
#   bash dev/generation/profile_step.sh BIN [gsa|llama] [BATCH] [eager|graphs]
# Kernels inside a CUDA graph are profiled one by one too (ncu's default graph profiling).
set -uo pipefail
bin=${1:-.device}
arch=${2:-gsa}
batch=${3:-1}
mode=${4:-eager}
out=${OUT:-/tmp/lintime-device}
mkdir -p "$out"
torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$bin:${LD_LIBRARY_PATH:-}"
graphs=false; [[ $mode == graphs ]] && graphs=true
csv="$out/ncu_${arch}_b${batch}_${mode}.csv"
timeout "${LIMIT:-400}" ncu --profile-from-start off --csv --metrics gpu__time_duration.sum \
  "$bin/lintime" bench generate --device cuda --preset 1.3b --arch "$arch" --batches "$batch" \
  --prompt-length 256 --new-tokens 4 --profile-steps 2 --cuda-graphs "$graphs" > "$csv" 2> "$out/ncu.log"
echo "ncu exit $?"
# Two steps were profiled: per-step time = sum / 2.
python3 - "$csv" <<'PY'
import csv, collections, sys
# The program's own output shares the file: the table starts at ncu's header row ("ID", ...).
rows = list(csv.reader(open(sys.argv[1])))
start = next(i for i, r in enumerate(rows) if r and r[0] == "ID")
header, rows = rows[start], [r for r in rows[start + 1:] if len(r) == len(rows[start])]
name, value, unit = header.index("Kernel Name"), header.index("Metric Value"), header.index("Metric Unit")
to_us = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3, "second": 1e6, "s": 1e6}
total = collections.Counter(); count = collections.Counter()
for r in rows:
    total[r[name][:90]] += float(r[value].replace(",", "")) * to_us[r[unit]] / 2  # over 2 steps
    count[r[name][:90]] += 0.5
print(f"{sum(count.values()):.0f} kernels, {sum(total.values()) / 1e3:.3f} ms of kernel time per step")
for kernel, us in total.most_common(25):
    print(f"{us:9.1f} us  {count[kernel]:5.0f}x  {kernel}")
PY
