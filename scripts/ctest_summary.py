#!/usr/bin/env python3
"""One summary line for a ctest run, from the JUnit file of `ctest --output-junit FILE`.

ctest's own last line counts skipped tests among the passed ones ("100% tests passed"); this
prints one line saying how many were skipped and why (GoogleTest's skip message, grouped), then
the counts as the closing line, e.g.

    skipped: 27 of 250 tests (27: no CUDA device here: the CUDA kernels were compiled ...)
    tests: 223 passed, 0 failed, 27 skipped

Standard library only (run by the system python3 from `make test`). Exit status 0 unless the
file is missing or unreadable; the test run's own status is make's business.
"""
import collections
import re
import sys
import xml.etree.ElementTree as ElementTree


def skip_reason(case: ElementTree.Element) -> str:
    """The reason GoogleTest printed after 'Skipped', or ctest's own message."""
    output = case.findtext("system-out") or ""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if re.search(r":\d+: Skipped$", line.strip()) and index + 1 < len(lines):
            return lines[index + 1].strip()
    skipped = case.find("skipped")
    if skipped is not None and skipped.get("message"):
        return skipped.get("message")
    return "no reason printed"


def summarize(path: str) -> str:
    root = ElementTree.parse(path).getroot()
    cases = root.iter("testcase")
    passed = failed = 0
    reasons = collections.Counter()
    for case in cases:
        status = case.get("status", "")
        if case.find("failure") is not None or status == "fail":
            failed += 1
        elif case.find("skipped") is not None or status in ("notrun", "disabled"):
            reasons[skip_reason(case)] += 1
        else:
            passed += 1
    skipped = sum(reasons.values())
    groups = "; ".join(f"{count}: {reason}" for reason, count in reasons.most_common())
    why = f"skipped: {skipped} of {passed + failed + skipped} tests" + (f" ({groups})" if groups else "")
    return why + "\n" + f"tests: {passed} passed, {failed} failed, {skipped} skipped"


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: ctest_summary.py CTEST_JUNIT.xml", file=sys.stderr)
        return 2
    try:
        print(summarize(sys.argv[1]))
    except (OSError, ElementTree.ParseError) as error:
        print(f"ctest_summary: cannot read '{sys.argv[1]}': {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
