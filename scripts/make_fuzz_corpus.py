#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (tests/fuzz/fuzz_targets.h) under
tests/fuzz/corpus/<target>/: small valid inputs of each reader, from which the replay test and
libFuzzer mutate. Needs torch and safetensors (.venv) and a built `lintime` (LINTIME_BINARY, default build/lintime). Parts of multi-file inputs are joined by
the separator line of fuzz_targets.h.

    .venv/bin/python scripts/make_fuzz_corpus.py [OUT_DIR]
"""
import io
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEP = b"\n--8<--\n"


def bytes_to_unicode():
    """GPT-2's printable stand-ins for the 256 byte values."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


def write(out, target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "fuzz", "corpus")
    shutil.rmtree(out, ignore_errors=True)
    g = torch.Generator().manual_seed(0)
    tensors = {"embed.weight": torch.randn(4, 3, generator=g), "norm.weight": torch.ones(3, dtype=torch.bfloat16),
               "positions": torch.arange(5, dtype=torch.int64)}
    write(out, "safetensors", "three_dtypes", save(tensors, metadata={"format": "pt"}))
    write(out, "safetensors", "empty", save({}))
    write(out, "safetensors_index", "two_shards", json.dumps(
        {"metadata": {"total_size": 64}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                                        "b.weight": "model-00002-of-00002.safetensors"}}).encode())
    buffer = io.BytesIO()
    torch.save({"a.weight": torch.randn(2, 3, generator=g), "b.bias": torch.zeros(3, dtype=torch.float16)}, buffer)
    write(out, "torch_checkpoint", "state_dict", buffer.getvalue())
    for name, path in [("gsa", "tests/fixtures/fla_parity/gsa/config.json"),
                       ("gla_hybrid", "tests/fixtures/fla_parity/gla_hybrid/config.json"),
                       ("gsa_hybrid", "tests/fixtures/fla_parity/gsa_hybrid/config.json"),
                       ("llama", "tests/fixtures/hf_parity/llama/config.json"),
                       ("mistral", "tests/fixtures/hf_parity/mistral/config.json"),
                       ("based", "configs/lm/models/based-small.json")]:
        with open(os.path.join(ROOT, path), "rb") as f:
            write(out, "model_config", name, f.read())
    with open(os.path.join(ROOT, "configs/mqar/gsa-small.toml"), "rb") as f:
        write(out, "train_config", "mqar", f.read())
    # The LM config with its model inline (a path would be read relative to the fuzzer's folder).
    with open(os.path.join(ROOT, "configs/lm/models/gsa-small.json")) as f:
        model = json.load(f)
    inline = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in model.items()) + " }"
    with open(os.path.join(ROOT, "configs/lm/compare-small.toml")) as f:
        text = f.read().replace('config = "configs/lm/models/gsa-small.json"', "config = " + inline)
    write(out, "train_config", "lm", text.encode())
    # A byte-level BPE of the 256 bytes and a few merges.
    table = bytes_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    merges = ["h e", "l l", "he ll", "Ġ w", "o r"]
    for m in merges:
        vocab["".join(m.split())] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    text = "hello world, ünïcode ✓ 123".encode()
    write(out, "bpe_tokenizer", "tiny", json.dumps(vocab).encode() + SEP + ("#version: 0.2\n" + "\n".join(merges) + "\n").encode()
          + SEP + text)
    document = {"version": "1.0", "added_tokens": [{"id": len(vocab) - 1, "content": "<|endoftext|>", "special": True}],
                "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
                "decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": vocab, "merges": merges}}
    write(out, "tokenizer_json", "tiny", json.dumps(document).encode() + SEP + text)
    # A `lintime tokenize` folder (the tiny BPE above, two documents): manifest.json + its train shard.
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "vocab.json"), "w") as f:
            json.dump(vocab, f)
        with open(os.path.join(tmp, "merges.txt"), "w") as f:
            f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        with open(os.path.join(tmp, "a.txt"), "w") as f:
            f.write("hello world\n\nworld hello hello\n")
        with open(os.path.join(tmp, "b.txt"), "w") as f:
            f.write("held out\n")
        binary = os.environ.get("LINTIME_BINARY", os.path.join(ROOT, "build", "lintime"))
        subprocess.run([binary, "tokenize", "--tokenizer", os.path.join(tmp, "vocab.json"), os.path.join(tmp, "a.txt"),
                        "--split-blank-lines", "--val", os.path.join(tmp, "b.txt"), "--out", os.path.join(tmp, "shards")],
                       check=True, capture_output=True)
        with open(os.path.join(tmp, "shards", "manifest.json"), "rb") as f:
            manifest = f.read()
        with open(os.path.join(tmp, "shards", "train-00000.bin"), "rb") as f:
            shard = f.read()
    write(out, "token_shards", "two_documents", manifest + SEP + shard)
    write(out, "completion_request", "completion", json.dumps(
        {"model": "m", "prompt": "Once upon", "max_tokens": 8, "temperature": 0.7, "top_p": 0.9, "stop": ["\n"],
         "stream": True, "stream_options": {"include_usage": True}, "seed": 3}).encode())
    write(out, "completion_request", "chat", json.dumps(
        {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
         "max_tokens": 4, "n": 1}).encode())
    write(out, "completion_request", "token_prompt", json.dumps({"model": "m", "prompt": [1, 2, 3], "max_tokens": 2}).encode())
    write(out, "utf8", "mixed", "aé€😀".encode() + b"\xc3\xa9")


if __name__ == "__main__":
    main()
