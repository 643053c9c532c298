#!/usr/bin/env python3
"""Plots an MQAR training run (the metrics.jsonl `lintime train` writes, or a trimmed copy in
bench/results) as an SVG: test accuracy and training loss against epochs. Standard library only.

  python3 scripts/plot_mqar.py METRICS.jsonl OUT.svg [--title TEXT] [--steps-per-epoch N]
"""
import argparse
import json
import math
import os
import sys
import tempfile

WIDTH, HEIGHT, MARGIN_LEFT, MARGIN_RIGHT, PANEL_HEIGHT, GAP, TOP = 760, 560, 70, 20, 200, 70, 50


def read_run(path):
    losses, accuracies = [], []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                sys.exit(f"plot_mqar: {path}:{number}: not a JSON line ({error.msg}); expected metrics.jsonl records")
            if "step" not in record:
                continue  # a header record
            if record.get("eval"):
                accuracies.append((record["step"], record["accuracy"]))
            elif "loss" in record and math.isfinite(record["loss"]):
                losses.append((record["step"], record["loss"]))
    if not accuracies and not losses:
        sys.exit(f"plot_mqar: {path} holds no training records (expected lines with step and loss or eval)")
    return losses, accuracies


def polyline(points, x_of, y_of, colour):
    coordinates = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in points)
    return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coordinates}"/>'


def panel(top, points, y_low, y_high, y_ticks, y_label, x_high, colour, steps_per_epoch, y_format):
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    x_of = lambda step: MARGIN_LEFT + plot_width * (step / steps_per_epoch) / x_high
    y_of = lambda value: top + PANEL_HEIGHT * (1 - (min(max(value, y_low), y_high) - y_low) / (y_high - y_low))
    parts = [f'<rect x="{MARGIN_LEFT}" y="{top}" width="{plot_width}" height="{PANEL_HEIGHT}" '
             'fill="none" stroke="#999"/>']
    for tick in y_ticks:
        y = y_of(tick)
        parts.append(f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{y_format(tick)}</text>')
    x_step = max(1, round(x_high / 8))
    for epoch in range(0, int(x_high) + 1, x_step):
        x = x_of(epoch * steps_per_epoch)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + PANEL_HEIGHT}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + PANEL_HEIGHT + 16}" text-anchor="middle">{epoch}</text>')
    parts.append(f'<text x="{MARGIN_LEFT - 50}" y="{top + PANEL_HEIGHT / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 {MARGIN_LEFT - 50} {top + PANEL_HEIGHT / 2})">{y_label}</text>')
    if points:
        parts.append(polyline(points, x_of, y_of, colour))
    return parts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics")
    parser.add_argument("out")
    parser.add_argument("--title", default=None)
    parser.add_argument("--steps-per-epoch", type=int, default=782, help="100k examples / batch 128 by default")
    args = parser.parse_args()
    if args.steps_per_epoch < 1:
        sys.exit(f"plot_mqar: --steps-per-epoch must be >= 1, got {args.steps_per_epoch}")
    if not os.path.isfile(args.metrics):
        sys.exit(f"plot_mqar: {args.metrics}: no such file (expected a metrics.jsonl)")
    losses, accuracies = read_run(args.metrics)
    last_step = max(step for step, _ in losses + accuracies)
    x_high = max(1.0, last_step / args.steps_per_epoch)
    title = args.title or os.path.basename(args.metrics)
    loss_high = math.ceil(max(loss for _, loss in losses)) if losses else 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             'font-family="sans-serif" font-size="12">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             f'<text x="{WIDTH / 2}" y="24" text-anchor="middle" font-size="15">{title}</text>']
    parts += panel(TOP, [(s, 100 * a) for s, a in accuracies], 0, 100, [0, 20, 40, 60, 80, 100],
                   "test accuracy (%)", x_high, "#1f77b4", args.steps_per_epoch, lambda v: f"{v:g}")
    parts += panel(TOP + PANEL_HEIGHT + GAP, losses, 0, loss_high, range(0, loss_high + 1, max(1, loss_high // 5)),
                   "training loss", x_high, "#d62728", args.steps_per_epoch, lambda v: f"{v:g}")
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle">epoch</text>')
    if accuracies:
        step, accuracy = accuracies[-1]
        parts.append(f'<text x="{WIDTH - MARGIN_RIGHT - 6}" y="{TOP + 16}" text-anchor="end">'
                     f'final {100 * accuracy:.2f}% at step {step}</text>')
    parts.append("</svg>")
    # Written whole, then renamed: no half-written plot on failure.
    directory = os.path.dirname(os.path.abspath(args.out))
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as handle:
        handle.write("\n".join(parts) + "\n")
    os.chmod(handle.name, 0o644)
    os.replace(handle.name, args.out)


if __name__ == "__main__":
    main()
