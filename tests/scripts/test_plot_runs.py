"""scripts/plot_runs.py and `lintime plot`: PNGs from fabricated MQAR-like and LM-like metrics
files (one run and several), and bad input giving a one-line error, a non-zero exit and no output
file. Run with the .venv python (matplotlib); LINTIME_BINARY names the lintime binary (ctest sets
it), without which the `lintime plot` cases skip."""
import json
import math
import os
import subprocess
import sys
import tempfile
import unittest

SOURCE_DIR = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SCRIPT = os.path.join(SOURCE_DIR, "scripts", "plot_runs.py")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_script(*args, env=None):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env)


def mqar_records():
    records = [{"run": "header: what the run was"}]
    for step in range(10, 401, 10):
        records.append({"step": step, "epoch": step // 100, "loss": 8.0 * math.exp(-step / 150), "lr": 1e-3,
                        "tokens_per_s": 1e5, "grad_norm": 1.5})
        if step % 100 == 0:
            accuracy = min(1.0, step / 400)
            records.append({"accuracy": accuracy, "eval": True, "examples": 100, "step": step,
                            "segments": [{"segment": "L=64 N=4", "accuracy": accuracy},
                                         {"segment": "L=128 N=8", "accuracy": accuracy * 0.9}]})
    return records


def lm_records():
    records = []
    for step in range(1, 201):
        loss = 3 + 5 * math.exp(-step / 40) + 0.1 * math.sin(step)
        records.append({"step": step, "loss": loss if step != 7 else None, "lr": 3e-4, "tokens_per_s": 2e4,
                        "tokens": step * 4096})
        if step % 50 == 0:
            val_loss = 3.2 + 5 * math.exp(-step / 40)
            records.append({"step": step, "eval": True, "val_loss": val_loss, "val_perplexity": math.exp(val_loss)})
    return records


class PlotRunsTest(unittest.TestCase):
    missing_run_message = "metrics.jsonl: no such file"
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()

    def plot(self, *args, env=None):
        return run_script(*args, env=env)

    def tearDown(self):
        self.dir.cleanup()

    def make_run(self, name, records=None, text=None):
        run = os.path.join(self.dir.name, name)
        os.makedirs(run)
        with open(os.path.join(run, "metrics.jsonl"), "w") as handle:
            handle.write(text if text is not None else "\n".join(json.dumps(r) for r in records) + "\n")
        return run

    def assert_png(self, path, minimum_bytes=10_000):
        self.assertTrue(os.path.isfile(path), path)
        with open(path, "rb") as handle:
            data = handle.read()
        self.assertEqual(data[:8], PNG_SIGNATURE)
        self.assertGreater(len(data), minimum_bytes)
        self.assertLess(len(data), 2_000_000)
        leftovers = [name for name in os.listdir(os.path.dirname(path)) if name.endswith(".tmp")]
        self.assertEqual(leftovers, [])

    def assert_fails(self, result, fragment, out):
        self.assertNotEqual(result.returncode, 0, result.stdout)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(lines[0].startswith("lintime: error: "), lines[0])
        self.assertIn(fragment, lines[0])
        self.assertFalse(os.path.exists(out), out)

    def test_mqar_run_writes_plot_png_in_the_run(self):
        run = self.make_run("gsa-small", mqar_records())
        result = self.plot(run)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_png(os.path.join(run, "plot.png"))

    def test_lm_run_and_several_runs(self):
        lm = self.make_run("lm-gsa", lm_records())
        out = os.path.join(self.dir.name, "lm.png")
        result = self.plot(lm, "--out", out, "--title", "a title")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_png(out)
        mqar = self.make_run("mqar", mqar_records())
        both = os.path.join(self.dir.name, "both.png")
        result = self.plot(lm, mqar, "--out", both)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_png(both)
        result = self.plot(lm, mqar)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("--out FILE.png is required", result.stderr)

    def test_a_metrics_file_plots_beside_itself(self):
        run = self.make_run("copy", mqar_records())
        copied = os.path.join(self.dir.name, "trimmed_run.jsonl")
        os.rename(os.path.join(run, "metrics.jsonl"), copied)
        result = self.plot(copied)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_png(os.path.join(self.dir.name, "trimmed_run.png"))

    def test_bad_input_is_one_line_and_writes_nothing(self):
        out = os.path.join(self.dir.name, "out.png")
        malformed = self.make_run("malformed", text='{"step": 1, "loss": 7.0}\n{"step": 2, "loss": 6.5}\nnot json\n')
        self.assert_fails(self.plot(malformed, "--out", out), "malformed/metrics.jsonl:3: not a JSON line", out)
        bad_field = self.make_run("bad_field", text='{"step": 1, "loss": "high"}\n')
        self.assert_fails(self.plot(bad_field, "--out", out), "metrics.jsonl:1: loss is \"high\", expected a number",
                          out)
        empty = self.make_run("empty", text="\n")
        self.assert_fails(self.plot(empty, "--out", out), "is empty", out)
        header_only = self.make_run("header_only", [{"run": "nothing logged yet"}])
        self.assert_fails(self.plot(header_only, "--out", out), "holds no training or evaluation records", out)
        missing = os.path.join(self.dir.name, "missing_run")
        os.makedirs(missing)
        self.assert_fails(self.plot(missing, "--out", out), self.missing_run_message, out)
        good = self.make_run("good", lm_records())
        self.assert_fails(self.plot(good, malformed, "--out", out), "malformed/metrics.jsonl:3", out)
        self.assert_fails(self.plot(good, "--out", os.path.join(self.dir.name, "out.svg")), "ending in .png",
                          os.path.join(self.dir.name, "out.svg"))

    def test_without_matplotlib_it_says_to_run_make_setup(self):
        blocker = os.path.join(self.dir.name, "blocker", "matplotlib")
        os.makedirs(blocker)
        with open(os.path.join(blocker, "__init__.py"), "w") as handle:
            handle.write("raise ImportError('matplotlib blocked by the test')\n")
        run = self.make_run("run", lm_records())
        env = dict(os.environ, PYTHONPATH=os.path.dirname(blocker))
        self.assert_fails(self.plot(run, env=env), "run `make setup`", os.path.join(run, "plot.png"))


@unittest.skipUnless(os.environ.get("LINTIME_BINARY"), "LINTIME_BINARY is not set (ctest sets it)")
class LintimePlotCommandTest(PlotRunsTest):
    """The same through `lintime plot`, with the .venv python this test runs under."""

    # lintime names a missing run itself, before python starts.
    missing_run_message = "is not a run: expected a run directory holding metrics.jsonl"

    def plot(self, *args, env=None, cwd=None):
        env = dict(env or os.environ, LINTIME_PYTHON=sys.executable, LINTIME_SOURCE_DIR=SOURCE_DIR)
        binary = os.path.abspath(os.environ["LINTIME_BINARY"])
        return subprocess.run([binary, "plot", *args], capture_output=True, text=True, env=env, cwd=cwd)

    def test_a_run_directory_starting_with_a_dash_is_not_an_option(self):
        run = self.make_run("-odd-name", mqar_records())
        result = self.plot("--", "-odd-name", cwd=self.dir.name)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_png(os.path.join(run, "plot.png"))

    def test_a_missing_python_is_one_line(self):
        run = self.make_run("run", lm_records())
        binary = os.path.abspath(os.environ["LINTIME_BINARY"])
        result = subprocess.run([binary, "plot", run], capture_output=True, text=True,
                                env=dict(os.environ, LINTIME_PYTHON=os.path.join(self.dir.name, "no-python"),
                                         LINTIME_SOURCE_DIR=SOURCE_DIR))
        self.assert_fails(result, "run `make setup`", os.path.join(run, "plot.png"))


if __name__ == "__main__":
    unittest.main()
