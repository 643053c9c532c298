#!/usr/bin/env bash
# The GSA paper's T2R claim at CPU scale (issue 21): pretrain a 2-layer Llama (the teacher) on
# tinyshakespeare, convert it to GSA and to GLA (lintime convert), finetune each on 5%, 10% and
# 20% of the teacher's tokens, train GSA and GLA of the same shapes from scratch on the same
# budgets, and score every model by perplexity on held-out text (the last tenth of the file,
# which no model trains on). Results: $OUT/results.jsonl and $OUT/t2r.png.
#   bash scripts/t2r_small.sh            (about 15 minutes on 2 CPU cores)
set -euo pipefail
lintime=${LINTIME:-build/lintime}
out=${OUT:-runs/t2r-small}
shared=${SHARED:-../shared/data}
data=${DATA:-data/t2r-shakespeare-gpt2}
teacher_steps=${TEACHER_STEPS:-240}
budgets=${BUDGETS:-"12 24 48"}
threads=${THREADS:-2}
rm -rf "$out" && mkdir -p "$out"

# Held-out text: the last tenth of the lines.
lines=$(wc -l < "$shared/tinyshakespeare.txt"); cut=$((lines * 9 / 10))
head -n "$cut" "$shared/tinyshakespeare.txt" > "$out/train.txt"
tail -n +"$((cut + 1))" "$shared/tinyshakespeare.txt" > "$out/val.txt"
rm -rf "$data"
"$lintime" tokenize --tokenizer "$shared/gpt2-vocab.json" "$out/train.txt" --val "$out/val.txt" --split-blank-lines --out "$data"

record() {  # name kind finetune_steps model_dir
  local line ppl
  line=$("$lintime" perplexity "$4" "$out/val.txt" --context 128 2>/dev/null)
  ppl=$(echo "$line" | sed -E 's/^perplexity ([0-9.]+) .*/\1/')
  echo "{\"model\": \"$1\", \"kind\": \"$2\", \"finetune_steps\": $3, \"finetune_tokens\": $(( $3 * 2048 )), \"teacher_tokens\": $(( teacher_steps * 2048 )), \"val_perplexity\": $ppl}" | tee -a "$out/results.jsonl"
}
train() {  # out config [--set ...]
  local run=$1 config=$2; shift 2
  "$lintime" train "$config" --out "$run" --threads "$threads" --set data.shards="$data" "$@" > "$run.log" 2>&1
}

train "$out/teacher" configs/lm/gsa-tiny-shakespeare.toml --set model.config=configs/lm/models/llama-tiny.json \
  --set train.max_steps="$teacher_steps" --set train.eval_every="$teacher_steps"
record teacher teacher 0 "$out/teacher/checkpoint"
for to in gsa gla; do
  "$lintime" convert "$out/teacher/checkpoint" "$out/$to-0" --to "$to"
  record "$to" converted 0 "$out/$to-0"
  for steps in $budgets; do
    train "$out/$to-finetuned-$steps" configs/t2r/tiny-shakespeare.toml --set model.from="$out/$to-0" \
      --set train.max_steps="$steps" --set train.eval_every="$steps"
    record "$to" converted "$steps" "$out/$to-finetuned-$steps/checkpoint"
    train "$out/$to-scratch-$steps" configs/lm/gsa-tiny-shakespeare.toml --set model.config="$out/$to-0/config.json" \
      --set train.max_steps="$steps" --set train.eval_every="$steps" --set train.warmup_steps=$(( steps / 10 + 1 ))
    record "$to" scratch "$steps" "$out/$to-scratch-$steps/checkpoint"
  done
done
"${PYTHON:-.venv/bin/python}" scripts/plot_t2r.py "$out/results.jsonl" "$out/t2r.png"
