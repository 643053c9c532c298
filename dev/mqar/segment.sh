#!/usr/bin/env bash
# One time-boxed segment of a long MQAR training on the GPU machine: resumes RUN_DIR when it
# holds a checkpoint (carried in from the previous call), trains STEPS more steps, and leaves
# the run (checkpoint, metrics.jsonl) under $OUT/run for the next call.
#   bash dev/mqar/segment.sh BIN CONFIG RUN_DIR STEPS [--set ...]
set -uo pipefail
bin=$1 config=$2 run_dir=$3 steps=$4; shift 4
out=${OUT:-/tmp/lintime-mqar}
torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$bin:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
mkdir -p "$out/run"
resume=()
done_steps=0
if [[ -f $run_dir/checkpoint/trainer_state.json ]]; then
  cp -r "$run_dir"/. "$out/run/"
  resume=(--resume)
  done_steps=$(python3 -c "import json; print(json.load(open('$run_dir/checkpoint/trainer_state.json'))['step'])")
fi
echo "resuming at step $done_steps; training to step $((done_steps + steps))"
"$bin/lintime" train "$config" --device cuda --out "$out/run" --stop-after-steps $((done_steps + steps)) \
  "${resume[@]}" "$@" > "$out/train.log" 2>&1
echo "train exit $?"
grep -v "^\s*$" "$out/train.log" | grep -E "test accuracy|steps:|wall|error|overall" | tail -30
tail -c 400 "$out/run/metrics.jsonl"
