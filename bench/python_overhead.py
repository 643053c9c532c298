#!/usr/bin/env python3
"""What lintime's Python entry points (lintime.ops, fla's names) add per call over the raw
registered op (torch.ops.lintime.*) they wrap: both called on the same tiny inputs, where the op
itself is cheap, so that the difference is the wrapper's argument handling. Median over repeats
of blocks of calls; forward only, under no_grad. A benchmark, not a test.

    python3 bench/python_overhead.py [--device cpu|cuda] [--jsonl FILE] [--commit C]
"""
import argparse
import json
import platform
import socket
import statistics
import subprocess
import time

import torch
import torch.nn.functional as F

from lintime_package import import_lintime


def per_call_us(fn, calls, repeats, sync):
    for _ in range(calls // 10 + 1):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--jsonl", default=None)
    parser.add_argument("--commit", default=None)
    args = parser.parse_args()
    lintime = import_lintime()
    raw, ops = torch.ops.lintime, lintime.ops
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.set_num_threads(1)
    commit = args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                           text=True).stdout.strip()
    B, T, H, K, V, M = 1, 4, 1, 8, 8, 4  # tiny: the op's own time is small next to a ms-scale kernel
    r = lambda *s: torch.randn(*s, device=device)  # noqa: E731
    q, k, v, s, g = r(B, T, H, K), r(B, T, H, K), r(B, T, H, V), r(B, T, H, M).softmax(-1), F.logsigmoid(r(B, T, H, M))
    gk = F.logsigmoid(r(B, T, H, K))
    x, w = r(B, T, 16), r(16, 1, 4)
    pairs = {
        "chunk_gsa": (lambda: raw.gsa_chunk(q, k, v, s, g, K ** -0.5, None, None, False, None),
                      lambda: ops.chunk_gsa(q, k, v, s, g)),
        "chunk_gla": (lambda: raw.gla_chunk(q, k, v, gk, False, K ** -0.5, None, False, None),
                      lambda: ops.chunk_gla(q, k, v, gk)),
        "parallel_based": (lambda: raw.taylor_attention_chunk(q, k, v, True, 1e-6, None, None, False, None),
                           lambda: ops.parallel_based(q, k, v)),
        "sliding_window_attention": (lambda: raw.sliding_window_attention(q, k, v, 3, K ** -0.5, None),
                                     lambda: ops.sliding_window_attention(q, k, v, 3)),
        "short_convolution": (lambda: raw.short_convolution(x, w, None, True, None, False, None),
                              lambda: ops.short_convolution(x, w)),
    }
    host = socket.gethostname()
    where = torch.cuda.get_device_name() if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"{'op':26} {'raw µs':>9} {'lintime.ops µs':>15} {'added µs':>9}   ({where}, {commit})")
    lines = []
    with torch.no_grad():
        for name, (raw_fn, wrapped_fn) in pairs.items():
            # Interleaved so that drift (frequency, caches) affects both alike.
            raw_us, wrapped_us = [], []
            for _ in range(3):
                raw_us.append(per_call_us(raw_fn, args.calls, args.repeats, sync))
                wrapped_us.append(per_call_us(wrapped_fn, args.calls, args.repeats, sync))
            raw_t, wrapped_t = min(raw_us), min(wrapped_us)
            print(f"{name:26} {raw_t:9.2f} {wrapped_t:15.2f} {wrapped_t - raw_t:9.2f}")
            lines.append(dict(bench="python_overhead", op=name, device=str(device), hardware=where, host=host,
                              commit=commit, raw_us=round(raw_t, 3), wrapped_us=round(wrapped_t, 3),
                              added_us=round(wrapped_t - raw_t, 3), torch=torch.__version__))
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
