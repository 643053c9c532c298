"""The lintime Python package for the benchmarks: the installed one, else the build tree's copy
(build/python), else the sources (python/) with `library` (a liblintime_ops.so built elsewhere,
such as the device machine's build-h200 copy) named through LINTIME_LIBRARY."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_lintime(library=None):
    if library:
        os.environ["LINTIME_LIBRARY"] = os.path.abspath(library)
    try:
        import lintime
        return lintime
    except ModuleNotFoundError:
        pass
    staged = os.path.join(ROOT, "build", "python")
    sys.path.insert(0, staged if os.path.isdir(os.path.join(staged, "lintime")) else os.path.join(ROOT, "python"))
    import lintime
    return lintime
