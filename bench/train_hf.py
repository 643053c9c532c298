#!/usr/bin/env python3
"""Training throughput of Hugging Face's LlamaForCausalLM (SDPA attention), the anchor next to
lintime's language-model training (anchors.md §1): the Transformer++ at the GSA-1.3B width
(d 2048, 24 layers, 16 heads of 128, SwiGLU 5632, vocab 32000), bf16 weights, torch's fused
AdamW, random tokens, 16K tokens per step as --shapes B×T. Optionally fla's GSAForCausalLM
(--fla PATH: a fla checkout on PYTHONPATH) at fla's 1.3B defaults. Writes JSON lines:
tokens_per_s over the timed steps (after --warmup steps), peak_allocated_bytes, step_time_s.
When transformers is not importable or no GPU is present it prints one line and exits 0.

  python3 bench/train_hf.py --shapes 8x2048,2x8192 --steps 10 --jsonl out.jsonl [--fla .fla]
"""
import argparse
import json
import sys
import time


def measure(model, batch, length, vocab, steps, warmup, torch):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, vocab, (batch, length), device="cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(warmup + steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    seconds = sum(times)
    return {"tokens_per_s": batch * length * steps / seconds, "step_time_s": seconds / steps,
            "peak_allocated_bytes": torch.cuda.max_memory_allocated(), "loss": float(loss)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default="8x2048,2x8192")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--jsonl", default="")
    parser.add_argument("--fla", default="", help="a fla checkout to import GSAForCausalLM from")
    args = parser.parse_args()
    try:
        import torch
        import transformers
    except ImportError as error:
        print(f"train_hf: transformers not importable ({error}); no anchor")
        return 0
    if not torch.cuda.is_available():
        print("train_hf: no CUDA device; no anchor")
        return 0
    models = {"hf_llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16,
        num_key_value_heads=16, max_position_embeddings=8192, attn_implementation="sdpa"))}
    if args.fla:
        sys.path.insert(0, args.fla)
        import fla.models  # noqa: F401 (registers the fla models with transformers)
        from fla.models import GSAConfig, GSAForCausalLM
        models["fla_gsa"] = lambda: GSAForCausalLM(GSAConfig())
    out = open(args.jsonl, "a") if args.jsonl else None
    for name, make in models.items():
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = make().to(torch.bfloat16).train()
        vocab = model.config.vocab_size
        for shape in args.shapes.split(","):
            batch, length = (int(x) for x in shape.split("x"))
            line = {"bench": "train", "arch": name, "model": type(model).__name__, "batch": batch, "seq_len": length,
                    "dtype": "bfloat16 weights, fused AdamW", "transformers": transformers.__version__,
                    "torch": torch.__version__, "parameters": sum(p.numel() for p in model.parameters())}
            try:
                line.update(measure(model, batch, length, vocab, args.steps, args.warmup, torch))
            except torch.cuda.OutOfMemoryError:
                line["error"] = "out of memory"
            print(json.dumps(line), flush=True)
            if out:
                out.write(json.dumps(line) + "\n")
                out.flush()
        del model
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
