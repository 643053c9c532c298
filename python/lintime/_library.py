"""Loads liblintime_ops.so, the package's native library, after checking that it was compiled
against the torch in this process: a library built for another torch fails with undefined symbols
or, worse, runs with a mismatched ABI."""
import os

import torch

# LINTIME_LIBRARY names another build of the library (an A/B comparison of two commits' kernels,
# the device machine's own build); the package's sources may then come without a build record.
_OVERRIDE = os.environ.get("LINTIME_LIBRARY")
try:
    from lintime import _build_info
    BUILD_TORCH_VERSION, CUDA_ARCHITECTURES = _build_info.TORCH_VERSION, _build_info.CUDA_ARCHITECTURES
except ImportError:
    if not _OVERRIDE:
        raise ImportError("lintime: the package has no build record (_build_info.py); expected an installed package "
                          "(pip install .) or the build tree's copy (PYTHONPATH=build/python after make build)")
    BUILD_TORCH_VERSION, CUDA_ARCHITECTURES = torch.__version__, "unknown"


def _release(version):
    return version.split("+")[0]


if _release(torch.__version__) != _release(BUILD_TORCH_VERSION):
    raise ImportError(
        f"lintime was built for torch {BUILD_TORCH_VERSION} but this process has torch {torch.__version__}; "
        "rebuild it against this torch (pip install --no-build-isolation --force-reinstall .)")

LIBRARY_PATH = _OVERRIDE or os.path.join(os.path.dirname(__file__), "liblintime_ops.so")
if not os.path.isfile(LIBRARY_PATH):
    raise ImportError(f"lintime: the native library {LIBRARY_PATH} is missing; expected the package's build "
                      "(pip install ., or PYTHONPATH=build/python after make build)")
torch.ops.load_library(LIBRARY_PATH)
