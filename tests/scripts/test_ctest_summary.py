"""scripts/ctest_summary.py: counts passed, failed and skipped tests of a ctest JUnit file and
groups the skips by GoogleTest's reason; an unreadable file is a one-line error and exit 1."""
import os
import subprocess
import sys
import tempfile
import unittest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "ctest_summary.py")

# The shape ctest 3.25 writes: a skipped GoogleTest case carries SKIP_REGULAR_EXPRESSION_MATCHED
# and its output, where the reason follows the "file:line: Skipped" line.
JUNIT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="x" tests="4" failures="1" disabled="0" skipped="2">
  <testcase name="A.Passes" classname="A.Passes" time="0.1" status="run"><system-out>ok</system-out></testcase>
  <testcase name="A.Fails" classname="A.Fails" time="0.1" status="fail"><failure message="Failed"/></testcase>
  <testcase name="C.One" classname="C.One" time="0.1" status="run"><skipped message="SKIP_REGULAR_EXPRESSION_MATCHED"/>
    <system-out>[ RUN      ] C.One
/src/tests/ops/test_x_cuda.cpp:12: Skipped
no CUDA device here
[  SKIPPED ] C.One (0 ms)</system-out></testcase>
  <testcase name="C.Two" classname="C.Two" time="0.1" status="run"><skipped message="SKIP_REGULAR_EXPRESSION_MATCHED"/>
    <system-out>/src/tests/ops/test_y_cuda.cpp:40: Skipped
no CUDA device here</system-out></testcase>
</testsuite>
"""


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


class CtestSummaryTest(unittest.TestCase):
    def test_counts_and_reasons(self):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "junit.xml")
            with open(path, "w") as handle:
                handle.write(JUNIT)
            result = run(path)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines(),
                         ["skipped: 2 of 4 tests (2: no CUDA device here)",
                          "tests: 1 passed, 1 failed, 2 skipped"])

    def test_missing_file_is_one_line_and_exit_1(self):
        result = run("/nonexistent/junit.xml")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1)
        self.assertIn("/nonexistent/junit.xml", result.stderr)


if __name__ == "__main__":
    unittest.main()
