#!/usr/bin/env python3
"""What keeping recurrent decoding states in bfloat16 costs in accuracy (`lintime serve
--state-dtype bfloat16`): for each model folder, (1) the perplexity of a long text scored token by
token through decode steps — every step reads the states and rounds them back, the worst case —
with float32 and with bfloat16 states; (2) over 1,024 greedy tokens generated with float32
states, how often the bfloat16-state model, fed the same tokens, picks the same next token, and
where free-running greedy generation with bfloat16 states first departs from float32's. One
JSON line per model (--jsonl).

    PYTHONPATH=build/python python3 scripts/state_dtype_accuracy.py MODEL_DIR... --text FILE
        [--tokens 16384] [--generate 1024] [--jsonl FILE]
"""
import argparse
import json
import math
import os
import subprocess
import time

import torch
import transformers

import lintime


def scored_nll(model, ids):
    """Mean NLL of ids[1:] given everything before, through one prefill token and steps."""
    logits = model.prefill(ids[:, :1])
    total = 0.0
    for t in range(1, ids.shape[1]):
        total -= torch.log_softmax(logits.double(), -1)[0, ids[0, t]].item()
        logits = model.step(ids[:, t])
    return total / (ids.shape[1] - 1)


def greedy(model, prompt, steps):
    logits = model.prefill(prompt)
    tokens = []
    for _ in range(steps):
        token = logits.argmax(-1)
        tokens.append(token.item())
        logits = model.step(token)
    return tokens


def forced_agreement(model, prompt, tokens):
    """Fraction of positions where the model, fed `tokens`, picks the next one itself."""
    logits = model.prefill(prompt)
    same = 0
    for token in tokens:
        same += int(logits.argmax(-1).item() == token)
        logits = model.step(torch.tensor([token]))
    return same / len(tokens)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--text", required=True)
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--generate", type=int, default=1024)
    parser.add_argument("--jsonl", default=None)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    for folder in args.models:
        tokenizer = transformers.GPT2TokenizerFast(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"))
        with open(args.text) as f:
            ids = torch.tensor([tokenizer.encode(f.read())[: args.tokens]])
        start = time.time()
        wide = lintime.load_model(folder)
        narrow = lintime.load_model(folder, state_dtype=torch.bfloat16)
        nll = {name: scored_nll(model, ids) for name, model in (("float32", wide), ("bfloat16", narrow))}
        prompt = ids[:, :32]
        reference = greedy(wide, prompt, args.generate)
        free = greedy(narrow, prompt, args.generate)
        departs = next((i for i, (a, b) in enumerate(zip(reference, free)) if a != b), None)
        line = dict(bench="state_dtype_accuracy", commit=commit, model=folder, scored_tokens=ids.shape[1] - 1,
                    perplexity_float32=round(math.exp(nll["float32"]), 4),
                    perplexity_bfloat16=round(math.exp(nll["bfloat16"]), 4),
                    greedy_tokens=args.generate,
                    forced_agreement=round(forced_agreement(narrow, prompt, reference), 4),
                    free_running_first_difference=departs, seconds=round(time.time() - start, 1))
        print(json.dumps(line), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
