"""A few lintime decoding steps (gsa_step_, in place) at one batch size, for profilers:
    ncu -k regex:recurrent python3 dev/kernels/decode_steps.py --library .device/liblintime_ops.so --batch 256
Shapes as bench/gsa.py's decode rows: (H, K, V, M) = (4, 512, 512, 64), bf16 inputs, fp32 states."""
import argparse

import torch
import torch.nn.functional as F


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", required=True, help="path of liblintime_ops.so")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.ops.load_library(args.library)
    H, K, V, M, B = 4, 512, 512, 64, args.batch
    q, k, v = (torch.randn(B, H, D, device="cuda").to(torch.bfloat16) for D in (K, K, V))
    g = F.logsigmoid(torch.randn(B, H, M, device="cuda")) / 8
    s = (1 - g.exp()).to(torch.bfloat16)
    g = g.to(torch.bfloat16)
    state_k = torch.randn(B, H, K, M, device="cuda")
    state_v = torch.randn(B, H, M, V, device="cuda")
    for _ in range(args.steps):
        torch.ops.lintime.gsa_step_(q, k, v, s, g, K ** -0.5, state_k, state_v)
    torch.cuda.synchronize()
    print(f"{args.steps} steps at batch {B}: done")


if __name__ == "__main__":
    main()
