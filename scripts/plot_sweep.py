#!/usr/bin/env python3
"""Draws the figure of a recall sweep from the sweep.json that `lintime sweep` writes: the best
test accuracy over the learning rates of each (model, point), one line per model.

  .venv/bin/python scripts/plot_sweep.py OUT/sweep.json --out OUT/figure.png

plot "by_d" (the GSA paper's Fig. 3a layout): accuracy (%) against d_model on a log2 axis, the
paper's values (when the sweep file gives them) dashed in the same colour. plot "frontier" (the
BASED paper's layout): accuracy against recurrent state bytes per sequence, log axis. Points
whose runs have not finished are left out; a point where only some rates finished is drawn
hollow. matplotlib (Agg), which scripts/bootstrap.sh installs into .venv.
"""
import argparse
import json
import os
import sys
import tempfile


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table", help="sweep.json written by lintime sweep")
    parser.add_argument("--out", required=True, help="the PNG to write")
    args = parser.parse_args()
    try:
        with open(args.table) as file:
            table = json.load(file)
        points = table["points"]
        plot = table.get("plot", "by_d")
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"plot_sweep: cannot read {args.table} as a sweep table ({error}); expected lintime sweep's sweep.json",
              file=sys.stderr)
        return 1

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    models = []
    for point in points:
        if point["model"] not in models:
            models.append(point["model"])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    x_key = "d_model" if plot == "by_d" else "state_bytes"
    for index, model in enumerate(models):
        colour = colours[index % len(colours)]
        rows = sorted((p for p in points if p["model"] == model), key=lambda p: p[x_key])
        done = [p for p in rows if p["best_accuracy"] is not None]
        if done:
            xs = [p[x_key] for p in done]
            ys = [100 * p["best_accuracy"] for p in done]
            axes.plot(xs, ys, "-", color=colour, label=model)
            for p, x, y in zip(done, xs, ys):
                complete = p["runs_finished"] == p["runs_total"]
                axes.plot([x], [y], "o", color=colour, markerfacecolor=colour if complete else "white")
        paper = [p for p in rows if p.get("paper_percent") is not None]
        if paper:
            axes.plot([p[x_key] for p in paper], [p["paper_percent"] for p in paper], "--", color=colour, alpha=0.6,
                      label=f"{model} (paper)")
    if plot == "by_d":
        axes.set_xscale("log", base=2)
        ticks = sorted({p["d_model"] for p in points})
        axes.set_xticks(ticks)
        axes.set_xticklabels([str(t) for t in ticks])
        axes.set_xlabel("model dimension d")
    else:
        axes.set_xscale("log")
        axes.set_xlabel("recurrent state per sequence (bytes)")
    axes.set_ylabel("MQAR accuracy (%, best over learning rates)")
    axes.set_ylim(-2, 102)
    axes.grid(True, alpha=0.3)
    axes.set_title(table.get("title", ""))
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    # Written next to the target and renamed: never a half-written PNG.
    directory = os.path.dirname(os.path.abspath(args.out))
    handle, temporary = tempfile.mkstemp(suffix=".png", dir=directory)
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=120)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's file is private; the figure is not
        os.replace(temporary, args.out)
    except OSError as error:
        os.unlink(temporary)
        print(f"plot_sweep: cannot write {args.out} ({error})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
