#!/usr/bin/env bash
# The generation benchmark of issue 5 on the GPU machine, in one or two calls. The lintime binary
# is built on the development machine and carried in BIN (with libtomlplusplus); it finds the GPU
# machine's torch through LD_LIBRARY_PATH. JSON lines and logs go to $OUT.
#   bash dev/generation/device_bench.sh BIN [throughput|flat|hf|all]
#   throughput: GSA 1.3B vs the same-width Transformer++ at batch 1, 64, 128, 2K prompt, 1K new
#   flat:       batch 1, 2K prompt, 1K and 16K new tokens (peak memory, state bytes)
#   hf:         Hugging Face LlamaForCausalLM (SDPA) at the throughput setting, when importable
set -uo pipefail
bin=${1:-.device}
what=${2:-all}
out=${OUT:-/tmp/lintime-device}
mkdir -p "$out"
torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$bin:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if [[ $what == all || $what == throughput ]]; then
  timeout "${LIMIT:-560}" "$bin/lintime" bench generate --device cuda --preset 1.3b --batches 1,64,128 --prompt-length 2048 \
    --new-tokens 1024 --jsonl "$out/generate.jsonl" 2> "$out/generate.log"
fi
if [[ $what == all || $what == flat ]]; then
  timeout "${LIMIT:-560}" "$bin/lintime" bench generate --device cuda --preset 1.3b --batches 1 --prompt-length 2048 \
    --new-tokens 1024,16384 --jsonl "$out/flat.jsonl" 2> "$out/flat.log"
fi
if [[ $what == all || $what == hf ]]; then
  timeout "${LIMIT:-560}" python3 bench/generate_hf.py --batches 1,64,128 --prompt-length 2048 --new-tokens 1024 \
    --jsonl "$out/generate_hf.jsonl" > "$out/generate_hf.log" 2>&1
  tail -5 "$out/generate_hf.log"
fi
