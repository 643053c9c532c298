#!/usr/bin/env python3
"""BASED on the GPU: lintime's Taylor linear attention prefill and decoding next to fla, SDPA and the floor.

Runs in one process, on the same inputs (bf16, [B, T, H, ·]): lintime's registered
torch.ops.lintime.taylor_attention_chunk (the normalised read-out), fla's parallel_based
(imported from FLA_PATH when set), torch's scaled_dot_product_attention (causal, 16 heads of 64
dims: the same model width) and the floor of anchors.md §2 from the copy bandwidth and GEMM rate
measured in the same run. Forward (prefill); with --backward also forward+backward (training:
lintime's fused prefill and backward kernels, fla's parallel_based under autograd, SDPA). Writes one JSON line per measurement (--jsonl)
and prints a table. A benchmark, not a test. Shapes that run out of memory are reported as such.

    FLA_PATH=/path/to/flash-linear-attention python3 bench/based.py [--library other/liblintime_ops.so]
"""
import argparse
import json
import os
import socket
import sys

import torch

from lintime_package import import_lintime

SHAPES = [(128, 8192, 16, 16, 64), (16, 32768, 16, 16, 64), (8, 2048, 16, 16, 64)]  # (B, T, H, d', d_v)


def unfused(path):
    """Whether LINTIME_UNFUSED (src/core/fused_paths.h) sends `path` to its ATen form."""
    names = [name for name in os.environ.get("LINTIME_UNFUSED", "").split(",") if name]
    return "all" in names or path in names


def bench_ms(fn, warmup=5, rep=20):
    import triton.testing
    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def measure_ceilings():
    x = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    bandwidth = 2 * x.numel() / (bench_ms(lambda: y.copy_(x)) * 1e-3)
    del x, y
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    flops = 2 * 8192 ** 3 / (bench_ms(lambda: a @ b) * 1e-3)
    return bandwidth, flops


def floor_ms(B, T, H, D, V, bandwidth, flops):
    """Least bytes (q, k, v in, o out, bf16) and FLOPs of the chunked form (64-token chunks): per
    token and head the state update and read-out 2·2·E·V with E = 1 + D + D², and the intra-chunk
    scores and apply 2·64·(D + V)."""
    E = 1 + D + D * D
    data = B * T * H * (2 * D + 2 * V) * 2
    work = B * T * H * (4 * E * V + 2 * 64 * (D + V))
    return max(data / bandwidth, work / flops) * 1e3


def train_floor_ms(B, T, H, D, V, bandwidth, flops):
    """Forward+backward: the forward's bytes plus the backward's (q, k, v, o, do in; dq, dk, dv
    out), and three times the forward's FLOPs (the backward forms two products per forward one)."""
    E = 1 + D + D * D
    data = B * T * H * ((2 * D + 2 * V) + (4 * D + 4 * V)) * 2
    work = 3 * B * T * H * (4 * E * V + 2 * 64 * (D + V))
    return max(data / bandwidth, work / flops) * 1e3


def timed(name, fn, reference=None):
    try:
        out = fn()
        torch.cuda.synchronize()
        error = None
        nonfinite = int((~torch.isfinite(out)).sum().item())
        if nonfinite:  # a wrong kernel shows here, not as a fast time
            print(f"{name}: {nonfinite} non-finite output elements")
        if reference is not None:
            error = ((out.double() - reference.double()).norm() / reference.double().norm()).item()
        ms = bench_ms(fn)
        return {"ms": ms, "rel_rms_vs_lintime": error, "nonfinite": nonfinite}, out
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"ms": None, "note": "out of memory"}, None
    except Exception as error:  # an implementation that cannot run this shape: the table says so
        torch.cuda.empty_cache()
        return {"ms": None, "note": repr(error)[:120]}, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", default=None,
                        help="another build's liblintime_ops.so (default: the lintime package's own)")
    parser.add_argument("--jsonl", default=None)
    parser.add_argument("--commit", default=None)
    parser.add_argument("--shapes", default=None, help="comma-separated indices into SHAPES (\",\": none)")
    parser.add_argument("--decode-batches", default="1,128", help="batch sizes of the decoding step")
    parser.add_argument("--conv-shapes", default="",
                        help="short convolutions BxTxDxW, comma-separated (empty: none): forward and fwd+bwd")
    parser.add_argument("--backward", action="store_true",
                        help="also time forward+backward (training) of lintime, fla and SDPA")
    parser.add_argument("--window-shapes", default="128x8192x65,16x32768x129",
                        help="sliding-window shapes BxTxW, comma-separated (empty: none)")
    args = parser.parse_args()
    import_lintime(args.library)  # bench/lintime_package.py: registers torch.ops.lintime
    lintime = torch.ops.lintime
    fla = None
    if os.environ.get("FLA_PATH"):
        sys.path.insert(0, os.environ["FLA_PATH"])
        try:
            from fla.ops.based import parallel_based as fla
        except Exception as error:
            print(f"fla import failed: {error!r}")
    gpu = torch.cuda.get_device_name()
    bandwidth, flops = measure_ceilings()
    print(f"{gpu}: copy {bandwidth / 1e12:.2f} TB/s, bf16 GEMM {flops / 1e12:.0f} TFLOP/s")
    records = []
    shapes = SHAPES if args.shapes is None else [SHAPES[int(i)] for i in args.shapes.split(",") if i]
    for B, T, H, D, V in shapes:
        gen = torch.Generator(device="cuda").manual_seed(0)
        q = (torch.randn(B, T, H, D, device="cuda", generator=gen) / 2).to(torch.bfloat16)
        k = (torch.randn(B, T, H, D, device="cuda", generator=gen) / 2).to(torch.bfloat16)
        v = torch.randn(B, T, H, V, device="cuda", generator=gen).to(torch.bfloat16)
        shape = {"B": B, "T": T, "H": H, "feature_dim": D, "value_dim": V}
        ours, reference = timed("lintime", lambda: lintime.taylor_attention_chunk(q, k, v, True, 1e-6, None, None,
                                                                                    False, None)[0])
        row = [("lintime taylor_attention_chunk", ours)]
        if fla is not None:
            row.append(("fla parallel_based", timed("fla", lambda: fla(q, k, v), reference)[0]))
        del reference
        torch.cuda.empty_cache()
        qs = torch.randn(B, H, T, V, device="cuda", dtype=torch.bfloat16)
        sdpa = lambda: torch.nn.functional.scaled_dot_product_attention(qs, qs, qs, is_causal=True)
        row.append(("torch SDPA causal (16 x 64)", timed("sdpa", sdpa)[0]))
        del qs
        torch.cuda.empty_cache()
        if args.backward:
            # Training: forward + backward of o against a fixed gradient; lintime's path is the fused
            # prefill + fused backward (LINTIME_UNFUSED=taylor: the ATen form under autograd).
            do = torch.randn(B, T, H, V, device="cuda", generator=gen).to(torch.bfloat16)
            leaves = [x.detach().requires_grad_(True) for x in (q, k, v)]

            def train(fn):
                def step():
                    for x in leaves:
                        x.grad = None
                    out = fn(*leaves)
                    out.backward(do)
                    return torch.cat([x.grad.flatten() for x in leaves])
                return step
            ours_train, grads = timed("lintime train", train(
                lambda a, b, c: lintime.taylor_attention_chunk(a, b, c, True, 1e-6, None, None, False, None)[0]))
            row.append(("lintime taylor_attention_chunk fwd+bwd", ours_train))
            if fla is not None:
                row.append(("fla parallel_based fwd+bwd", timed("fla train", train(fla), grads)[0]))
            del grads
            torch.cuda.empty_cache()
            qs = torch.randn(B, H, T, V, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            dos = torch.randn(B, H, T, V, device="cuda", dtype=torch.bfloat16)

            def sdpa_train():
                qs.grad = None
                torch.nn.functional.scaled_dot_product_attention(qs, qs, qs, is_causal=True).backward(dos)
                return qs.grad
            row.append(("torch SDPA causal (16 x 64) fwd+bwd", timed("sdpa train", sdpa_train)[0]))
            del qs, dos, do, leaves
            torch.cuda.empty_cache()
        del q, k, v
        torch.cuda.empty_cache()
        for impl, result in row:
            training = impl.endswith("fwd+bwd")
            floor = (train_floor_ms if training else floor_ms)(B, T, H, D, V, bandwidth, flops)
            record = {"op": "based_train" if training else "based_prefill", "impl": impl, "shape": shape, **result,
                      "floor_ms": floor,
                      "gpu": gpu, "host": socket.gethostname(), "commit": args.commit}
            records.append(record)
            ms = f"{result['ms']:.2f}" if result.get("ms") is not None else result.get("note", "-")
            err = result.get("rel_rms_vs_lintime")
            print(f"B={B:<4} T={T:<6} {impl:<32} {ms:>12} ms   floor {floor:.2f} ms"
                  + (f"   rel. RMS vs lintime {err:.1e}" if err is not None else ""))
    # Sliding-window attention (BASED's local mixer): q, k, v [B, T, 16, 64], window w keys. The
    # path taken is the fused kernel unless LINTIME_UNFUSED lists window (then the ATen form).
    path = "ATen form" if unfused("window") else "fused"
    for B, T, w in [tuple(int(x) for x in item.split("x")) for item in args.window_shapes.split(",") if item]:
        gen = torch.Generator(device="cuda").manual_seed(2)
        q, k, v = (torch.randn(B, T, 16, 64, device="cuda", generator=gen).to(torch.bfloat16) for _ in range(3))
        result, _ = timed("window", lambda: lintime.sliding_window_attention(q, k, v, w, 0.125, None))
        floor = 4 * q.numel() * 2 / bandwidth * 1e3
        sdpa, _ = timed("sdpa", lambda: torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True))
        rows = [(f"lintime sliding window ({path})", result, floor), ("torch SDPA causal, no window", sdpa, floor)]
        if args.backward:
            # Training: o.backward(do); floor: q, k, v, o, do read and dq, dk, dv written once more.
            do = torch.randn(B, T, 16, 64, device="cuda", generator=gen).to(torch.bfloat16)
            leaves = [x.detach().requires_grad_(True) for x in (q, k, v)]

            def train(fn):
                def step():
                    for x in leaves:
                        x.grad = None
                    fn(*leaves).backward(do)
                    return leaves[0].grad
                return step
            ours_train, _ = timed("window train", train(
                lambda a, b, c: lintime.sliding_window_attention(a, b, c, w, 0.125, None)))
            sdpa_train, _ = timed("sdpa train", train(lambda a, b, c: torch.nn.functional.scaled_dot_product_attention(
                a.transpose(1, 2), b.transpose(1, 2), c.transpose(1, 2), is_causal=True).transpose(1, 2)))
            train_floor = 12 * q.numel() * 2 / bandwidth * 1e3
            rows += [(f"lintime sliding window ({path}) fwd+bwd", ours_train, train_floor),
                     ("torch SDPA causal, no window fwd+bwd", sdpa_train, train_floor)]
            del do, leaves
        for impl, r, floor in rows:
            records.append({"op": "sliding_window", "impl": impl, "shape": {"B": B, "T": T, "H": 16, "D": 64,
                            "window": w}, **r, "floor_ms": floor, "gpu": gpu, "commit": args.commit})
            ms = f"{r['ms']:.3f}" if r.get("ms") is not None else r.get("note", "-")
            print(f"window B={B:<4} T={T:<6} w={w:<5} {impl:<44} {ms:>10} ms   floor {floor:.3f} ms")
        del q, k, v
        torch.cuda.empty_cache()
    # Short convolutions (BaseConv's and the projections'): x [B, T, D], weight [D, 1, W], bias,
    # SiLU; the fused kernels unless LINTIME_UNFUSED lists conv (the ATen shift-and-add form). Floor: x
    # read and y written (forward); x, dy read and dx written besides (backward).
    conv_path = "ATen form" if unfused("conv") else "fused"
    for B, T, D, W in [tuple(int(x) for x in item.split("x")) for item in args.conv_shapes.split(",") if item]:
        gen = torch.Generator(device="cuda").manual_seed(3)
        x = torch.randn(B, T, D, device="cuda", generator=gen).to(torch.bfloat16)
        weight = (torch.randn(D, 1, W, device="cuda", generator=gen) / 2).to(torch.bfloat16)
        bias = torch.zeros(D, device="cuda", dtype=torch.bfloat16)
        forward, _ = timed("conv", lambda: lintime.short_convolution(x, weight, bias, True, None, False, None)[0])
        leaves = [t.detach().requires_grad_(True) for t in (x, weight, bias)]
        dy = torch.randn_like(x)

        def conv_train():
            for t in leaves:
                t.grad = None
            lintime.short_convolution(*leaves, True, None, False, None)[0].backward(dy)
            return leaves[0].grad
        train, _ = timed("conv train", conv_train)
        for impl, r, floor in ((f"lintime short convolution ({conv_path})", forward, 2 * x.numel() * 2 / bandwidth * 1e3),
                               (f"lintime short convolution ({conv_path}) fwd+bwd", train,
                                5 * x.numel() * 2 / bandwidth * 1e3)):
            records.append({"op": "short_convolution", "impl": impl, "shape": {"B": B, "T": T, "D": D, "W": W}, **r,
                            "floor_ms": floor, "gpu": gpu, "commit": args.commit})
            ms = f"{r['ms']:.3f}" if r.get("ms") is not None else r.get("note", "-")
            print(f"conv B={B:<4} T={T:<6} D={D:<5} W={W} {impl:<48} {ms:>10} ms   floor {floor:.3f} ms")
        del x, leaves, dy
        torch.cuda.empty_cache()
    # Decoding: one token per sequence against fp32 states S [B, H, 273, V], z [B, H, 273]. The
    # fused step (in place) next to lintime's ATen step (the functional op) and the floor: the
    # states read and written once.
    H, D, V = 16, 16, 64
    E = 1 + D + D * D
    for B in [int(b) for b in args.decode_batches.split(",") if b]:
        gen = torch.Generator(device="cuda").manual_seed(1)
        q = (torch.randn(B, H, D, device="cuda", generator=gen) / 2).to(torch.bfloat16)
        k = (torch.randn(B, H, D, device="cuda", generator=gen) / 2).to(torch.bfloat16)
        v = torch.randn(B, H, V, device="cuda", generator=gen).to(torch.bfloat16)
        state = torch.randn(B, H, E, V, device="cuda", generator=gen)
        z = torch.rand(B, H, E, device="cuda", generator=gen) * 10 + 20
        state_bytes = 2 * 4 * B * H * (E * V + E)
        floor = state_bytes / bandwidth * 1e3
        fused = bench_ms(lambda: lintime.taylor_attention_step_(q, k, v, True, 1e-6, state, z))
        aten = bench_ms(lambda: lintime.taylor_attention_step(q, k, v, True, 1e-6, state, z))
        for impl, ms in (("lintime fused step", fused), ("lintime ATen step", aten)):
            records.append({"op": "based_decode", "impl": impl, "shape": {"B": B, "H": H, "feature_dim": D,
                            "value_dim": V}, "ms": ms, "state_tb_s": state_bytes / (ms * 1e-3) / 1e12,
                            "floor_ms": floor, "gpu": gpu, "host": socket.gethostname(), "commit": args.commit})
            print(f"decode B={B:<4} {impl:<32} {ms:10.4f} ms   {state_bytes / (ms * 1e-3) / 1e12:.2f} TB/s of "
                  f"state   floor {floor:.4f} ms")
    if args.jsonl:
        with open(args.jsonl, "a") as out:
            for record in records:
                out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
