#!/usr/bin/env python3
"""Loads a lintime language-model checkpoint (a model folder written by `lintime train` with
task = "lm") with Hugging Face transformers — AutoModelForCausalLM and AutoTokenizer — and
compares its logits on a tokenized sentence with `lintime forward`'s on the same ids. Needs
transformers (and sentencepiece + protobuf for a SentencePiece tokenizer) in the Python that
runs it; not part of make test.

  .venv/bin/python scripts/check_hf_load.py runs/NAME/checkpoint [--lintime build/lintime]
"""
import argparse
import os
import subprocess
import sys
import tempfile


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--lintime", default="build/lintime")
    parser.add_argument("--text", default="ROMEO:\nWhat light through yonder window breaks?")
    args = parser.parse_args()
    import torch
    import transformers
    from safetensors.torch import load_file, save_file

    model = transformers.AutoModelForCausalLM.from_pretrained(args.folder, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.folder)
    ids = torch.tensor([tokenizer.encode(args.text)])
    with tempfile.TemporaryDirectory() as scratch:
        ids_path, out_path = os.path.join(scratch, "ids.safetensors"), os.path.join(scratch, "out.safetensors")
        save_file({"input_ids": ids}, ids_path)
        subprocess.run([args.lintime, "forward", args.folder, "--input-ids", ids_path, "--out", out_path,
                        "--device", "cpu"], check=True, stdout=subprocess.DEVNULL)
        ours = load_file(out_path)["logits"].double()
    with torch.no_grad():
        theirs = model(ids).logits.double()
    error = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    print(f"{type(model).__name__} and {type(tokenizer).__name__} (transformers {transformers.__version__}) loaded "
          f"{args.folder}; {ids.shape[1]} tokens; max |lintime - transformers| / max |logit| = {error:.2e}")
    return 0 if error < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
