#!/usr/bin/env python3
"""Perplexity against finetuning tokens for scripts/t2r_small.sh: the teacher as a line, the
converted GSA and GLA (0 tokens = converted, not finetuned) and GSA and GLA from scratch.
  python3 scripts/plot_t2r.py RESULTS.jsonl OUT.png"""
import json
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    teacher = [r for r in rows if r["kind"] == "teacher"]
    if teacher:
        axes.axhline(teacher[0]["val_perplexity"], color="black", linestyle=":", label="teacher (Transformer++)")
    styles = {("gsa", "converted"): ("tab:blue", "-o", "GSA converted"), ("gla", "converted"): ("tab:orange", "-o", "GLA converted"),
              ("gsa", "scratch"): ("tab:blue", "--s", "GSA from scratch"), ("gla", "scratch"): ("tab:orange", "--s", "GLA from scratch")}
    for (model, kind), (color, style, label) in styles.items():
        points = sorted((r["finetune_tokens"], r["val_perplexity"]) for r in rows if r["model"] == model and r["kind"] == kind)
        if points:
            axes.plot([p[0] for p in points], [p[1] for p in points], style, color=color, label=label)
    axes.set_yscale("log")
    axes.set_xlabel("finetuning tokens")
    axes.set_ylabel("held-out perplexity")
    axes.set_title("Transformer-to-linear conversion, 2-layer models, tinyshakespeare")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(sys.argv[2], dpi=120)
    print(f"wrote {sys.argv[2]}")


if __name__ == "__main__":
    main()
