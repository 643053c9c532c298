#!/usr/bin/env python3
"""Generation throughput of Hugging Face's LlamaForCausalLM (SDPA attention, its DynamicCache),
the anchor next to `lintime bench generate`: the same Transformer++ shape as lintime's
`--preset 1.3b` (d 2048, 24 layers, 16 heads of 128, SwiGLU 5632, vocab 32000), random
N(0, 0.02) weights in bf16, a random prompt, greedy decoding with one forward per token in a
Python loop (no sampling overhead). Writes JSON lines with the fields of lintime's benchmark:
ttft_ms, decode_tokens_per_s, overall_tokens_per_s, peak_allocated_bytes. When transformers
is not importable it prints one line saying so and exits 0 (the anchor is then missing).

  python3 bench/generate_hf.py --batches 1,64,128 --prompt-length 2048 --new-tokens 1024 --jsonl out.jsonl
"""
import argparse
import json
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="1,64,128")
    parser.add_argument("--prompt-length", type=int, default=2048)
    parser.add_argument("--new-tokens", default="1024")
    parser.add_argument("--preset", default="1.3b", choices=["1.3b", "tiny"])
    parser.add_argument("--jsonl", default="")
    parser.add_argument("--no-cudnn-sdpa", action="store_true",
                        help="take cuDNN out of SDPA's backends: torch 2.11 tries it first on Hopper and it "
                             "builds a plan for every new key length, i.e. every decode step")
    args = parser.parse_args()
    try:
        import torch
        import transformers
    except ImportError as error:
        print(f"generate_hf: transformers not importable ({error}); no Hugging Face anchor")
        return 0
    if not torch.cuda.is_available():
        print("generate_hf: no CUDA device; no Hugging Face anchor")
        return 0
    big = args.preset == "1.3b"
    config = transformers.LlamaConfig(
        vocab_size=32000 if big else 512, hidden_size=2048 if big else 128, intermediate_size=5632 if big else 256,
        num_hidden_layers=24 if big else 2, num_attention_heads=16 if big else 4,
        num_key_value_heads=16 if big else 4, max_position_embeddings=1 << 20)
    config._attn_implementation = "sdpa"
    if args.no_cudnn_sdpa:
        torch.backends.cuda.enable_cudnn_sdp(False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16).eval()
    out = open(args.jsonl, "a") if args.jsonl else None
    for batch in [int(b) for b in args.batches.split(",")]:
        for new_tokens in [int(n) for n in args.new_tokens.split(",")]:
            line = {"bench": "generate", "arch": "hf_llama", "model": f"transformers {transformers.__version__} "
                    "LlamaForCausalLM (sdpa)", "cudnn_sdpa": not args.no_cudnn_sdpa, "preset": args.preset, "batch": batch,
                    "prompt_length": args.prompt_length, "new_tokens": new_tokens, "dtype": "bfloat16",
                    "device": "cuda"}
            try:
                prompt = torch.randint(0, config.vocab_size, (batch, args.prompt_length), device="cuda")
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                torch.cuda.synchronize()
                with torch.no_grad():
                    start = time.perf_counter()
                    cache = transformers.DynamicCache(config=config)
                    logits = model(prompt, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
                    token = logits[:, -1].argmax(-1, keepdim=True)
                    torch.cuda.synchronize()
                    first = time.perf_counter()
                    for _ in range(new_tokens - 1):
                        logits = model(token, past_key_values=cache, use_cache=True).logits
                        token = logits[:, -1].argmax(-1, keepdim=True)
                    torch.cuda.synchronize()
                    end = time.perf_counter()
                line.update(ttft_ms=1e3 * (first - start),
                            decode_tokens_per_s=batch * (new_tokens - 1) / (end - first) if new_tokens > 1 else 0.0,
                            overall_tokens_per_s=batch * new_tokens / (end - start),
                            peak_allocated_bytes=torch.cuda.max_memory_allocated())
                del cache, logits
            except torch.cuda.OutOfMemoryError:
                line["error"] = "out of memory"
            print(json.dumps(line), flush=True)
            if out:
                out.write(json.dumps(line) + "\n")
                out.flush()  # a run cut off by a time limit keeps its finished lines
    return 0


if __name__ == "__main__":
    sys.exit(main())
