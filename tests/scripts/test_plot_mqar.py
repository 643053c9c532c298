"""scripts/plot_mqar.py: an SVG with both curves from a metrics.jsonl; bad input gives a one-line
error, a non-zero exit and no output file."""
import json
import os
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ElementTree

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "plot_mqar.py")


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


class PlotMqarTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.metrics = os.path.join(self.dir.name, "metrics.jsonl")
        self.out = os.path.join(self.dir.name, "run.svg")

    def tearDown(self):
        self.dir.cleanup()

    def write(self, lines):
        with open(self.metrics, "w") as handle:
            handle.write("\n".join(lines) + "\n")

    def test_plots_accuracy_and_loss(self):
        records = [{"run": "header"}]
        records += [{"step": s, "epoch": s // 10, "loss": 8.0 - s / 10} for s in range(10, 41, 10)]
        records += [{"step": 20, "eval": True, "accuracy": 0.25}, {"step": 40, "eval": True, "accuracy": 0.875}]
        self.write(json.dumps(r) for r in records)
        result = run(self.metrics, self.out, "--steps-per-epoch", "10", "--title", "test run")
        self.assertEqual(result.returncode, 0, result.stderr)
        root = ElementTree.parse(self.out).getroot()
        lines = [e for e in root.iter() if e.tag.endswith("polyline")]
        self.assertEqual(len(lines), 2)
        self.assertEqual(len(lines[0].get("points").split()), 2)  # two evaluations
        self.assertEqual(len(lines[1].get("points").split()), 4)  # four loss records
        texts = " ".join(e.text or "" for e in root.iter() if e.tag.endswith("text"))
        self.assertIn("final 87.50% at step 40", texts)
        self.assertIn("test run", texts)

    def test_bad_input_is_one_line_and_writes_nothing(self):
        self.write(['{"step": 10, "loss": 7.0}', "not json"])
        result = run(self.metrics, self.out)
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
        self.assertIn(":2: not a JSON line", result.stderr)
        self.assertFalse(os.path.exists(self.out))
        result = run(os.path.join(self.dir.name, "missing.jsonl"), self.out)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("no such file", result.stderr)
        self.assertFalse(os.path.exists(self.out))


if __name__ == "__main__":
    unittest.main()
