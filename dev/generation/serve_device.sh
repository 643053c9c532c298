#!/usr/bin/env bash
# Serving and GPU-test call on the GPU machine (issue 23). Binaries are built on the development
# machine (sm_90a), stripped, xz-compressed and carried in BIN with the Debian libraries the GPU
# machine lacks (BIN/lib); they find the GPU machine's torch through LD_LIBRARY_PATH. Random-weight
# 1.3B model folders come from two training steps on the carried shards (BIN/llama2-shards,
# `lintime tokenize` of tinyshakespeare with the Llama 2 tokenizer). Logs and JSON lines go to $OUT.
#   bash dev/generation/serve_device.sh BIN "tests gsa llama t2r7b" [COMMIT]
#   tests: every CUDA test binary in BIN (lintime_cuda_tests from `make device-pack`, or test_*_cuda)
#   gsa / llama: bench/serve.py on the GSA / Transformer++ 1.3B folder (STREAMS, PROMPT, NEW)
#   gsa-eager / llama-eager: `--cuda-graphs false` at EAGER_STREAMS; gsa-bf16: --state-dtype bfloat16
#   sanitize: compute-sanitizer memcheck and racecheck over every CUDA test binary in BIN
#     (SANITIZE_FILTER / RACECHECK_FILTER: gtest filters; racecheck of the whole suite takes > 430 s on an H100)
#   t2r7b: the training steps of configs/lm/gsa-mistral-7b-shape.toml (GSA at Mistral-7B's shape) with fp32 AdamW moments (issue 21)
set -uo pipefail
bin=${1:-.device}
what=${2:-tests gsa}
commit=${3:-unknown}
out=${OUT:-/tmp/lintime-device}
streams=${STREAMS:-1,16,64,128,256}
prompt=${PROMPT:-2048}
new=${NEW:-1024}
source "$(dirname "$0")/../device_call.sh" "$bin"

if has tests; then
  for test in "$bin"/lintime_cuda_tests "$bin"/test_*_cuda; do
    [[ -e $test ]] || continue
    name=$(basename "$test")
    timeout "${TEST_LIMIT:-150}" "$test" > "$out/$name.log" 2>&1
    code=$?
    since "$name exit $code: $(grep -cE '^\[       OK \]' "$out/$name.log") ok, $(grep -cE '^\[  FAILED  \]' "$out/$name.log") failed lines, $(grep -cE '^\[  SKIPPED \]' "$out/$name.log") skipped"
    grep -E "^\[  FAILED  \]|Failure$" "$out/$name.log" | head -8
  done
  tar -C "$out" -czf "$out/tests.tgz" $(cd "$out" && ls *test*.log) && rm -f "$out"/*test*.log
fi

model() {  # name config.json -> /tmp/models/NAME, a random-weight folder from two bf16 training steps
  local name=$1 config=$2
  [[ -d /tmp/models/$name ]] && { cp "$bin/tokenizer.model" "/tmp/models/$name/"; return; }
  "$bin/lintime" train configs/lm/gsa-mistral-7b-shape.toml --device cuda --out "/tmp/runs/$name" \
    --set model.config="$config" --set data.shards="$bin/llama2-shards" --set train.max_steps=2 \
    --set train.batch_tokens=4096 > "$out/train-$name.log" 2>&1 || { since "training $name failed"; tail -3 "$out/train-$name.log"; }
  mkdir -p /tmp/models && mv "/tmp/runs/$name/checkpoint" "/tmp/models/$name"
  cp "$bin/tokenizer.model" "/tmp/models/$name/"
  since "model $name ready"
}
serve() {  # name config.json extra-serve-args streams
  model "$1" "$2"
  timeout "${SERVE_LIMIT:-400}" python3 bench/serve.py "/tmp/models/$1" --binary "$bin/lintime" --device cuda --streams "$4" \
    --prompt-tokens "$prompt" --new-tokens "$new" --no-prefix-cache-runs --server-args "--dtype bfloat16 $3" \
    --jsonl "$out/serve.jsonl" --commit "$commit" >> "$out/serve.log" 2> "$out/serve-$1.err"
  since "serve $1 ($3) exit $?"; pkill -f "lintime serve" ; grep '"bench"' "$out/serve.log" | tail -n 5; tail -3 "$out/serve-$1.err"
}
has gsa && serve gsa-1.3b configs/lm/models/gsa-1.3b.json "" "$streams"
has gsa-eager && serve gsa-1.3b configs/lm/models/gsa-1.3b.json "--cuda-graphs false" "${EAGER_STREAMS:-1,64}"
has gsa-bf16 && serve gsa-1.3b configs/lm/models/gsa-1.3b.json "--state-dtype bfloat16" "${BF16_STREAMS:-256}"
has llama && serve llama-1.3b configs/lm/models/llama-1.3b.json "" "${LLAMA_STREAMS:-$streams}"
has llama-eager && serve llama-1.3b configs/lm/models/llama-1.3b.json "--cuda-graphs false" "${EAGER_STREAMS:-1,64}"
if has sanitize; then  # compute-sanitizer over the CUDA tests (SANITIZE_FILTER narrows them to small shapes)
  for tool in memcheck racecheck; do
    for test in "$bin"/lintime_cuda_tests "$bin"/test_*_cuda; do
      [[ -e $test ]] || continue
      name=$(basename "$test")
      filter=${SANITIZE_FILTER:-*}
      [[ $tool == racecheck ]] && filter=${RACECHECK_FILTER:-$filter}  # racecheck is ~3x memcheck's time
      timeout "${SANITIZE_LIMIT:-90}" compute-sanitizer --tool "$tool" --error-exitcode 9 "$test" \
        --gtest_filter="$filter" > "$out/$tool-$name.log" 2>&1
      since "$tool $name exit $?: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/$tool-$name.log" | tail -1)"
    done
  done
  tar -C "$out" -czf "$out/sanitize.tgz" $(cd "$out" && ls memcheck-*.log racecheck-*.log) && rm -f "$out"/memcheck-*.log "$out"/racecheck-*.log
fi
if has t2r7b; then
  "$bin/lintime" train configs/lm/gsa-mistral-7b-shape.toml --device cuda --out /tmp/runs/t2r7b \
    --set data.shards="$bin/llama2-shards" --set train.fp32_moments=true > "$out/t2r7b.log" 2>&1
  since "7B fp32 moments exit $?"; tail -6 "$out/t2r7b.log"
fi
