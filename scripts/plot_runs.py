#!/usr/bin/env python3
"""Plots training runs from the metrics.jsonl that `lintime train` writes, as one PNG: training
loss (lightly smoothed, raw faint) and validation loss against step, validation perplexity and
MQAR test accuracy when the runs logged them (a panel only for what exists), one line per run
labelled by its directory name. matplotlib (Agg), which scripts/bootstrap.sh installs into .venv.

  .venv/bin/python scripts/plot_runs.py RUN... [--out FILE.png] [--title TEXT]

RUN is a run directory (its metrics.jsonl is read) or a metrics file itself, such as the trimmed
copies in bench/results. One run writes RUN/plot.png (a file: its name with .png) unless --out
says otherwise; several need --out. `lintime plot` runs this script.
"""
import argparse
import json
import math
import os
import sys
import tempfile


class PlotError(Exception):
    """One line naming what is wrong and what was expected."""


def finite_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Run:
    def __init__(self, label):
        self.label = label
        self.train = []        # (step, loss)
        self.val_loss = []     # (step, val_loss)
        self.perplexity = []   # (step, val_perplexity)
        self.accuracy = []     # (step, accuracy)
        self.segments = {}     # segment name -> [(step, accuracy)]


def metrics_path_of(run):
    if os.path.isdir(run):
        return os.path.join(run, "metrics.jsonl")
    if os.path.isfile(run):
        return run
    raise PlotError(f"{run}: no such run directory or metrics file (expected a directory holding metrics.jsonl)")


def label_of(run):
    if os.path.isdir(run):
        return os.path.basename(os.path.normpath(os.path.abspath(run)))
    return os.path.splitext(os.path.basename(run))[0]


def read_run(run):
    path = metrics_path_of(run)
    if not os.path.isfile(path):
        raise PlotError(f"{path}: no such file (expected the metrics.jsonl that `lintime train` writes)")
    result = Run(label_of(run))
    records = 0
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise PlotError(f"{where}: not a JSON line ({error.msg}); expected one JSON object per line") from None
            if not isinstance(record, dict):
                raise PlotError(f"{where}: a JSON {type(record).__name__}, expected one JSON object per line")
            records += 1
            if "step" not in record:
                continue  # a header record (what the run was, on which machine)
            step = record["step"]
            if not finite_number(step):
                raise PlotError(f"{where}: step is {json.dumps(step)}, expected a number")

            def value(key):
                # A field that is absent or null (a NaN the trainer logged) gives None.
                field = record.get(key)
                if field is None:
                    return None
                if not finite_number(field):
                    raise PlotError(f"{where}: {key} is {json.dumps(field)}, expected a number")
                return field

            if record.get("eval") is True:
                for key, points in (("val_loss", result.val_loss), ("val_perplexity", result.perplexity),
                                    ("accuracy", result.accuracy)):
                    field = value(key)
                    if field is not None:
                        points.append((step, field))
                segments = record.get("segments", [])
                if not isinstance(segments, list):
                    raise PlotError(f"{where}: segments is {json.dumps(segments)}, expected a list")
                for segment in segments:
                    if isinstance(segment, dict) and finite_number(segment.get("accuracy")):
                        name = str(segment.get("segment", "?"))
                        result.segments.setdefault(name, []).append((step, segment["accuracy"]))
            else:
                loss = value("loss")
                if loss is not None:
                    result.train.append((step, loss))
    if records == 0:
        raise PlotError(f"{path} is empty; expected the JSON lines `lintime train` writes")
    if not (result.train or result.val_loss or result.perplexity or result.accuracy):
        raise PlotError(f"{path} holds no training or evaluation records (lines with step and loss, "
                        "or eval: true with val_loss, val_perplexity or accuracy)")
    return result


def smoothed(values):
    """Exponential moving average with bias correction (TensorBoard's smoothing), light: its span
    is a hundredth of the points (none up to 100 points, 5 points for 500), so steep drops keep their shape."""
    span = max(1.0, len(values) / 100)
    weight = 1 - 2 / (span + 1)
    out, average = [], 0.0
    for count, value in enumerate(values, 1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** count))
    return out


def output_path_of(args):
    if args.out:
        if not args.out.lower().endswith(".png"):
            raise PlotError(f"--out {args.out}: expected a file name ending in .png")
        return args.out
    if len(args.runs) > 1:
        raise PlotError(f"{len(args.runs)} runs given: --out FILE.png is required to plot several runs")
    run = args.runs[0]
    if os.path.isdir(run):
        return os.path.join(run, "plot.png")
    return os.path.splitext(run)[0] + ".png"


def draw(runs, title, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    panels = ["loss"]
    if any(run.perplexity for run in runs):
        panels.append("perplexity")
    if any(run.accuracy for run in runs):
        panels.append("accuracy")
    if not any(run.train or run.val_loss for run in runs):
        panels.remove("loss")
    figure, axes = pyplot.subplots(len(panels), 1, figsize=(8, 3.2 * len(panels) + 0.6), sharex=True, squeeze=False)
    axes = dict(zip(panels, axes[:, 0]))
    colours = pyplot.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, run in enumerate(runs):
        colour = colours[index % len(colours)]
        if "loss" in axes:
            axis = axes["loss"]
            if run.train:
                steps, losses = zip(*run.train)
                axis.plot(steps, losses, color=colour, alpha=0.25, linewidth=0.8)
                axis.plot(steps, smoothed(losses), color=colour, linewidth=1.5, label=f"{run.label} train")
            if run.val_loss:
                steps, losses = zip(*run.val_loss)
                axis.plot(steps, losses, color=colour, linestyle="--", marker="o", markersize=3,
                          label=f"{run.label} validation")
        if "perplexity" in axes and run.perplexity:
            steps, values = zip(*run.perplexity)
            axes["perplexity"].plot(steps, values, color=colour, marker="o", markersize=3, label=run.label)
        if "accuracy" in axes and run.accuracy:
            axis = axes["accuracy"]
            steps, values = zip(*run.accuracy)
            axis.plot(steps, [100 * v for v in values], color=colour, linewidth=1.5, label=run.label)
            axis.annotate(f"{100 * values[-1]:.2f}%", (steps[-1], 100 * values[-1]), textcoords="offset points",
                          xytext=(-4, -12), ha="right", fontsize=8, color=colour)
            if len(run.segments) > 1:  # per-segment accuracy, thin, when the test set has several
                for name, points in run.segments.items():
                    segment_steps, segment_values = zip(*points)
                    axis.plot(segment_steps, [100 * v for v in segment_values], color=colour, alpha=0.35,
                              linewidth=0.7, label=f"{run.label} {name}" if len(runs) == 1 else None)
    labels = {"loss": "loss", "perplexity": "validation perplexity", "accuracy": "test accuracy (%)"}
    for name, axis in axes.items():
        axis.set_ylabel(labels[name])
        axis.grid(True, alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8, loc="best")
    if "perplexity" in axes:
        axes["perplexity"].set_yscale("log")
    if "accuracy" in axes:
        axes["accuracy"].set_ylim(0, 100)
    axes[panels[-1]].set_xlabel("step")
    figure.suptitle(title)
    figure.tight_layout()

    # Written whole, then renamed: no half-written plot on failure.
    directory = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(directory):
        raise PlotError(f"--out {out}: the directory {directory} does not exist")
    handle = tempfile.NamedTemporaryFile(dir=directory, prefix=".plot_runs.", suffix=".png.tmp", delete=False)
    try:
        with handle:
            figure.savefig(handle, format="png", dpi=120)
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, out)
    except BaseException:
        os.unlink(handle.name)
        raise
    finally:
        pyplot.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="a run directory (holding metrics.jsonl) or a metrics file")
    parser.add_argument("--out", help="the PNG to write (default RUN/plot.png for one run)")
    parser.add_argument("--title", help="the figure's title (default: the run names)")
    args = parser.parse_args()
    try:
        out = output_path_of(args)
        runs = [read_run(run) for run in args.runs]
        try:
            import matplotlib  # noqa: F401
        except ImportError as error:
            raise PlotError(f"matplotlib cannot be imported by {sys.executable} ({error}); run `make setup` "
                            "(scripts/bootstrap.sh), which installs it into .venv") from None
        draw(runs, args.title or ", ".join(run.label for run in runs), out)
    except PlotError as error:
        print(f"lintime: error: plot: {error}", file=sys.stderr)  # as lintime plot, which runs this, says errors
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
