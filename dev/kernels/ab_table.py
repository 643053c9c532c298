#!/usr/bin/env python3
"""The A/B table of `device_check.sh ab`: per shape, each side's times over its rounds (min–max)
and B's change against A's best, from the JSON lines bench/gsa.py wrote for the two sides.

    python3 dev/kernels/ab_table.py OUT/ab-A.jsonl OUT/ab-B.jsonl
"""
import argparse
import json
import sys

TIMES = ("fwd_ms", "fwd_no_grad_ms", "fwd_bwd_ms")


def read_side(path):
    """{shape key: {time name: [values over rounds]}} of the lintime GSA rows of one side."""
    rows, label = {}, None
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"ab_table: {path}:{n}: not a JSON line ({e.msg})")
            if row.get("op") != "gsa_chunk" or row.get("impl") != "lintime":
                continue
            label = row.get("commit", label)
            shape = row["shape"]
            key = ", ".join(str(shape[d]) for d in ("B", "T", "H", "K", "V", "M"))
            for name in TIMES:
                if name in row:
                    rows.setdefault(key, {}).setdefault(name, []).append(row[name])
    if not rows:
        sys.exit(f"ab_table: {path} has no lintime gsa_chunk rows (expected bench/gsa.py's JSON lines)")
    return rows, label


def span(values):
    low, high = min(values), max(values)
    return f"{low:.3f}" if high - low < 5e-4 else f"{low:.3f}–{high:.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="side A's JSON lines (ab-A.jsonl)")
    parser.add_argument("b", help="side B's JSON lines (ab-B.jsonl)")
    args = parser.parse_args()
    a, label_a = read_side(args.a)
    b, label_b = read_side(args.b)
    print(f"A = {label_a}, B = {label_b}; ms, min–max over rounds; change = B's best against A's best\n")
    print("| shape (B, T, H, K, V, M) | time | A | B | change |")
    print("|---|---|---|---|---|")
    for key in a:
        if key not in b:
            continue
        for name in TIMES:
            if name not in a[key] or name not in b[key]:
                continue
            best_a, best_b = min(a[key][name]), min(b[key][name])
            change = (best_b / best_a - 1.0) * 100.0
            print(f"| {key} | {name[:-3]} | {span(a[key][name])} | {span(b[key][name])} | {change:+.1f}% |")


if __name__ == "__main__":
    main()
