#!/usr/bin/env python3
"""One forward + backward of the fused Taylor attention and the sliding window (bf16, H 16), for
Nsight Compute to profile the kernels of (dev/based/README.md):

    ncu -k regex:backward --section SpeedOfLight --section Occupancy --section WarpStateStats \\
        python3 dev/based/profile_backward.py --library build/liblintime_ops.so
"""
import argparse

import torch

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--library", default="build/liblintime_ops.so")
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--seqlen", type=int, default=4096)
args = parser.parse_args()
torch.ops.load_library(args.library)
B, T, H = args.batch, args.seqlen, 16
gen = torch.Generator(device="cuda").manual_seed(0)
q = (torch.randn(B, T, H, 16, device="cuda", generator=gen) / 2).bfloat16().requires_grad_(True)
k = (torch.randn(B, T, H, 16, device="cuda", generator=gen) / 2).bfloat16().requires_grad_(True)
v = torch.randn(B, T, H, 64, device="cuda", generator=gen).bfloat16().requires_grad_(True)
o = torch.ops.lintime.taylor_attention_chunk(q, k, v, True, 1e-6, None, None, False, None)[0]
o.backward(torch.randn_like(o))
x = [torch.randn(B, T, H, 64, device="cuda", generator=gen).bfloat16().requires_grad_(True) for _ in range(3)]
torch.ops.lintime.sliding_window_attention(*x, 65, 0.125, None).backward(torch.randn_like(x[0]))
torch.cuda.synchronize()
print("done")
