#!/usr/bin/env python3
"""GSA on the GPU: lintime's registered ops next to fla, FlashAttention (torch SDPA) and the floor.

Runs in one process, on the same inputs: lintime's torch.ops.lintime.gsa_chunk (forward,
forward+backward), gsa_step_ (decoding), fla's chunk_gsa / fused_recurrent_gsa (imported from
FLA_PATH when set), torch's scaled_dot_product_attention (causal, same model width, 128-dim
heads), and the memory/FLOP floor from the copy bandwidth and GEMM rate measured in the same run.
Writes one JSON line per measurement (--jsonl) and prints a table. A benchmark, not a test.

    FLA_PATH=/path/to/flash-linear-attention python3 bench/gsa.py [--library other/liblintime_ops.so]
"""
import argparse
import json
import math
import os
import socket
import subprocess
import sys

import torch
import torch.nn.functional as F

from lintime_package import import_lintime

CHUNK_SHAPES = [  # (B, T, H, K, V, M)
    (8, 2048, 4, 512, 512, 64),
    (16, 2048, 16, 64, 64, 64),
    (2, 8192, 4, 512, 512, 64),
    (1, 16384, 4, 512, 512, 64),
]
DECODE_BATCHES = [1, 64, 256]
DECODE_SHAPE = (4, 512, 512, 64)  # (H, K, V, M)


def load_fla():
    path = os.environ.get("FLA_PATH")
    if not path:
        return None, "FLA_PATH not set"
    sys.path.insert(0, path)
    try:
        from fla.ops.gsa import chunk_gsa, fused_recurrent_gsa
    except Exception as error:  # fla missing or incompatible: the table says so
        return None, f"fla import failed: {error!r}"
    return (chunk_gsa, fused_recurrent_gsa), None


def bench_ms(fn, warmup=25, rep=100, grad_to_none=None):
    """Median ms of fn. grad_to_none: leaves whose .grad is cleared before each call (untimed), so
    that a forward+backward is not charged for accumulating into the previous call's gradients."""
    import triton.testing
    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median",
                                   grad_to_none=grad_to_none)


def measure_ceilings():
    """Device-to-device copy bandwidth (bytes read + written per second) and bf16 GEMM rate."""
    x = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    copy_ms = bench_ms(lambda: y.copy_(x))
    bandwidth = 2 * x.numel() / (copy_ms * 1e-3)
    del x, y
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    gemm_ms = bench_ms(lambda: a @ b)
    flops = 2 * 8192 ** 3 / (gemm_ms * 1e-3)
    return bandwidth, flops


def gsa_inputs(B, T, H, K, V, M, dtype, requires_grad=False, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    def randn(*shape):
        return torch.randn(*shape, device="cuda", generator=gen)
    q = randn(B, T, H, K).to(dtype)
    k = randn(B, T, H, K).to(dtype)
    v = randn(B, T, H, V).to(dtype)
    g = F.logsigmoid(randn(B, T, H, M)) / 8  # the layer's gates (gate_logit_normalizer 8)
    s = (1 - g.exp()).to(dtype)
    g = g.to(dtype)
    tensors = [q, k, v, s, g]
    if requires_grad:
        for t in tensors:
            t.requires_grad_(True)
    return tensors


def chunk_bytes_and_flops(B, T, H, K, V, M, element=2):
    """Least bytes moved and FLOPs of GSA forward and backward (anchors.md §2)."""
    tokens = B * T
    qkv = tokens * H * (2 * K + V) * element
    sg = 2 * tokens * H * M * element
    o = tokens * H * V * element
    forward_bytes = qkv + sg + o
    backward_bytes = (qkv + sg + o) + (qkv + sg)  # read inputs and do; write dq, dk, dv, ds, dg
    # Per token and head: pass 1 q·H^k, state update, q·k and intra apply; pass 2 likewise.
    per_token = 2 * (2 * K * M + 2 * K * M + 2 * 64 * K + 2 * 64 * M)
    per_token += 2 * (2 * M * V + 2 * M * V + 2 * 64 * M + 2 * 64 * V)
    forward_flops = tokens * H * per_token / 2
    return forward_bytes, backward_bytes, forward_flops, 2 * forward_flops


def profile_kernels(fn, do, inputs):
    """CUDA time of each kernel in one forward+backward (after a warm-up), largest first."""
    from torch.profiler import ProfilerActivity, profile
    fn().backward(do)
    torch.cuda.synchronize()
    for t in inputs:
        t.grad = None
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn().backward(do)
        torch.cuda.synchronize()
    for t in inputs:
        t.grad = None
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    events.sort(key=lambda e: -e.device_time_total)
    total = sum(e.device_time_total for e in events)
    print(f"  kernels of one lintime forward+backward: {total / 1e3:.3f} ms")
    for e in events[:16]:
        print(f"    {e.device_time_total / 1e3:8.3f} ms  x{e.count:<3} {e.key[:110]}")


def relative_rms(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", default=None,
                        help="another build's liblintime_ops.so (default: the lintime package's own)")
    parser.add_argument("--jsonl", default=None)
    parser.add_argument("--commit", default=None)
    parser.add_argument("--quick", action="store_true", help="first shape and one decode batch only")
    parser.add_argument("--profile", action="store_true",
                        help="print lintime's CUDA kernel times for one forward+backward per shape")
    parser.add_argument("--skip-fla", action="store_true", help="leave fla out (its autotuning takes minutes)")
    parser.add_argument("--shapes", default=None,
                        help="comma-separated indices into the chunk shapes (default: all)")
    parser.add_argument("--no-decode", action="store_true", help="skip the decode-step measurements")
    parser.add_argument("--decode-batches", default=None,
                        help="comma-separated decode batch sizes (default: " + ",".join(map(str, DECODE_BATCHES)) + ")")
    args = parser.parse_args()

    package = import_lintime(args.library)  # bench/lintime_package.py
    lintime = torch.ops.lintime
    fla, fla_error = (None, "--skip-fla") if args.skip_fla else load_fla()
    commit = args.commit
    if commit is None:
        try:
            commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
        except Exception:
            commit = "unknown"
    gpu = torch.cuda.get_device_name()
    bandwidth, gemm_rate = measure_ceilings()
    rows = []
    out = open(args.jsonl, "a") if args.jsonl else None

    def record(**fields):
        fields.update(gpu=gpu, commit=commit, dtype="bfloat16")
        rows.append(fields)
        line = json.dumps(fields)
        if out:
            out.write(line + "\n")
            out.flush()

    print(f"{gpu}: copy {bandwidth / 1e12:.2f} TB/s, bf16 GEMM {gemm_rate / 1e12:.0f} TFLOP/s; "
          f"fla: {'yes' if fla else fla_error}", flush=True)
    record(op="ceilings", copy_tb_s=bandwidth / 1e12, gemm_tflop_s=gemm_rate / 1e12)

    shapes = CHUNK_SHAPES[:1] if args.quick else CHUNK_SHAPES
    if args.shapes is not None:
        shapes = [CHUNK_SHAPES[int(i)] for i in args.shapes.split(",") if i != ""]
    for B, T, H, K, V, M in shapes:
        shape = dict(B=B, T=T, H=H, K=K, V=V, M=M)
        fb, bb, ff, bf = chunk_bytes_and_flops(B, T, H, K, V, M)
        floor_fwd = max(fb / bandwidth, ff / gemm_rate) * 1e3
        floor_fwdbwd = floor_fwd + max(bb / bandwidth, bf / gemm_rate) * 1e3
        q, k, v, s, g = gsa_inputs(B, T, H, K, V, M, torch.bfloat16, requires_grad=True)
        do = torch.randn(B, T, H, V, device="cuda", dtype=torch.bfloat16)
        scale = K ** -0.5
        impls = {"lintime": lambda: package.ops.chunk_gsa(q, k, v, s, g, scale=scale)[0]}
        if fla:
            impls["fla"] = lambda: fla[0](q, k, v, s, g, scale=scale)[0]
        outputs = {}
        for name, fn in impls.items():
            with torch.no_grad():
                outputs[name] = fn()
            fwd = bench_ms(lambda: fn())  # as in training: the inputs require grad
            with torch.no_grad():
                fwd_no_grad = bench_ms(lambda: fn())  # inference

            def fwd_bwd():
                fn().backward(do)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fwd_bwd()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
            for t in (q, k, v, s, g):
                t.grad = None
            both = bench_ms(fwd_bwd, grad_to_none=[q, k, v, s, g])
            for t in (q, k, v, s, g):
                t.grad = None
            record(op="gsa_chunk", impl=name, shape=shape, fwd_ms=fwd, fwd_no_grad_ms=fwd_no_grad, fwd_bwd_ms=both,
                   tokens_per_s=B * T / (both * 1e-3), peak_extra_gib=peak / 2 ** 30,
                   floor_fwd_ms=floor_fwd, floor_fwd_bwd_ms=floor_fwdbwd)
        if args.profile:
            profile_kernels(impls["lintime"], do, (q, k, v, s, g))
        if "fla" in outputs:
            rows[-1]["lintime_vs_fla_o_relative_rms"] = relative_rms(outputs["lintime"], outputs["fla"])
        # FlashAttention at the same model width with 128-dim heads.
        heads = H * V // 128
        qa, ka, va = (torch.randn(B, heads, T, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                      for _ in range(3))
        doa = torch.randn(B, heads, T, 128, device="cuda", dtype=torch.bfloat16)
        sdpa = lambda: F.scaled_dot_product_attention(qa, ka, va, is_causal=True)
        fwd = bench_ms(sdpa)
        both = bench_ms(lambda: sdpa().backward(doa), grad_to_none=[qa, ka, va])
        record(op="sdpa_causal", impl="torch", shape=dict(B=B, T=T, heads=heads, D=128),
               fwd_ms=fwd, fwd_bwd_ms=both, tokens_per_s=B * T / (both * 1e-3))
        del q, k, v, s, g, do, qa, ka, va, doa, outputs
        torch.cuda.empty_cache()

    H, K, V, M = DECODE_SHAPE
    decode_batches = DECODE_BATCHES[1:2] if args.quick else DECODE_BATCHES
    if args.decode_batches:
        decode_batches = [int(b) for b in args.decode_batches.split(",") if b]
    for B in ([] if args.no_decode else decode_batches):
        q, k, v, s, g = gsa_inputs(B, 1, H, K, V, M, torch.bfloat16)
        state_k = torch.randn(B, H, K, M, device="cuda")
        state_v = torch.randn(B, H, M, V, device="cuda")
        state_bytes = 2 * 4 * B * H * (K * M + M * V)
        shape = dict(B=B, H=H, K=K, V=V, M=M)
        step = lambda: lintime.gsa_step_(q[:, 0], k[:, 0], v[:, 0], s[:, 0], g[:, 0], K ** -0.5, state_k, state_v)
        ms = bench_ms(step, warmup=50, rep=200)
        record(op="gsa_step", impl="lintime", shape=shape, ms=ms, state_tb_s=state_bytes / (ms * 1e-3) / 1e12,
               floor_ms=state_bytes / bandwidth * 1e3)
        if fla:
            fla_step = lambda: fla[1](q, k, v, s, g, scale=K ** -0.5, initial_state=(state_k, state_v),
                                      output_final_state=True)
            ms = bench_ms(fla_step, warmup=50, rep=200)
            record(op="gsa_step", impl="fla", shape=shape, ms=ms, state_tb_s=state_bytes / (ms * 1e-3) / 1e12,
                   floor_ms=state_bytes / bandwidth * 1e3)

    print(f"\n{'op':<12} {'impl':<8} {'shape':<34} {'fwd ms':>8} {'fwd+bwd':>8} {'floor':>12} {'peak GiB':>8}"
          "  (fwd: inputs requiring grad, as in training; no-grad fwd after the row)")
    for r in rows:
        if r["op"] == "ceilings":
            continue
        shape = ",".join(str(x) for x in r["shape"].values())
        if r["op"] == "gsa_step":
            print(f"{r['op']:<12} {r['impl']:<8} {shape:<34} {r['ms']:>8.4f} {'':>8} {r['floor_ms']:>12.4f}"
                  f"  {r['state_tb_s']:.2f} TB/s")
            continue
        floor = f"{r.get('floor_fwd_ms', math.nan):.3f}/{r.get('floor_fwd_bwd_ms', math.nan):.3f}"
        extra = f" o vs fla {r['lintime_vs_fla_o_relative_rms']:.1e}" if "lintime_vs_fla_o_relative_rms" in r else ""
        if "fwd_no_grad_ms" in r:
            extra = f"  no-grad fwd {r['fwd_no_grad_ms']:.3f}" + extra
        print(f"{r['op']:<12} {r['impl']:<8} {shape:<34} {r['fwd_ms']:>8.3f} {r['fwd_bwd_ms']:>8.3f} "
              f"{floor:>12} {r.get('peak_extra_gib', math.nan):>8.2f}{extra}")
    if out:
        out.close()


if __name__ == "__main__":
    main()
