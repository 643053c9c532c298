"""Bytes and time per kernel of one lintime GSA forward+backward, from ncu's metrics.

Run under ncu (dev/kernels/device_check.sh bytes does):
  ncu --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,... --csv \
      python3 dev/kernels/kernel_bytes.py --library L --shape 1 > raw.csv
then `python3 dev/kernels/kernel_bytes.py --table raw.csv` prints per kernel: time, DRAM bytes
read and written, the rate they imply against the copy rate, registers and achieved occupancy.
A kernel moving its bytes near the copy rate is bandwidth-bound; one far below it is bound by
what it issues (or its latency), which says where the time of a missed target goes.
"""
import argparse
import csv
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))


def run(library, shape_index):
    import torch
    import gsa as bench  # bench/gsa.py: the shapes and inputs of the benchmark

    torch.ops.load_library(library)
    B, T, H, K, V, M = bench.CHUNK_SHAPES[shape_index]
    q, k, v, s, g = bench.gsa_inputs(B, T, H, K, V, M, torch.bfloat16, requires_grad=True)
    do = torch.randn(B, T, H, V, device="cuda", dtype=torch.bfloat16)
    torch.ops.lintime.gsa_chunk(q, k, v, s, g, K ** -0.5, None, None, False, None)[0].backward(do)
    torch.cuda.synchronize()


def table(path, copy_tb_s):
    rows = defaultdict(dict)
    with open(path) as f:
        lines = [line for line in f if line.startswith('"')]
    for r in csv.DictReader(lines):
        if "lintime" not in r["Kernel Name"]:
            continue
        key = (r["ID"], r["Kernel Name"].split("(")[0].replace("void lintime::cuda::", "").replace("void lintime::", ""))
        value = float(r["Metric Value"].replace(",", ""))
        unit = r["Metric Unit"]
        scale = {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "ns": 1e-9, "us": 1e-6, "ms": 1e-3,
                 "nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3}.get(unit, 1)
        rows[key][r["Metric Name"]] = value * scale
    total_time = total_bytes = 0.0
    print(f"| kernel | µs | DRAM read MB | DRAM write MB | GB/s | of {copy_tb_s} TB/s | registers | occupancy % |")
    print("|---|---|---|---|---|---|---|---|")
    for (_, name), m in sorted(rows.items(), key=lambda kv: -kv[1].get("gpu__time_duration.sum", 0)):
        t = m.get("gpu__time_duration.sum", 0)
        read, write = m.get("dram__bytes_read.sum", 0), m.get("dram__bytes_write.sum", 0)
        total_time += t
        total_bytes += read + write
        rate = (read + write) / t / 1e9 if t else 0
        print(f"| {name} | {t * 1e6:.1f} | {read / 1e6:.1f} | {write / 1e6:.1f} | {rate:.0f} | "
              f"{rate / (copy_tb_s * 1e3) * 100:.0f}% | {m.get('launch__registers_per_thread', 0):.0f} | "
              f"{m.get('sm__warps_active.avg.pct_of_peak_sustained_active', 0):.1f} |")
    print(f"\nall lintime kernels: {total_time * 1e3:.3f} ms, {total_bytes / 1e6:.0f} MB of DRAM traffic "
          f"({total_bytes / (copy_tb_s * 1e12) * 1e3:.3f} ms at the copy rate)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", default="build/liblintime_ops.so")
    parser.add_argument("--shape", type=int, default=0, help="index into bench/gsa.py's CHUNK_SHAPES")
    parser.add_argument("--table", default=None, help="ncu --csv output to summarise instead of running")
    parser.add_argument("--copy-tb-s", type=float, default=3.0, help="the copy rate to compare against")
    args = parser.parse_args()
    if args.table:
        table(args.table, args.copy_tb_s)
    else:
        run(args.library, args.shape)
