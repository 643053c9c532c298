"""lintime from Python: fla-compatible linear-time attention ops and layers over lintime's C++/CUDA
kernels (torch.ops.lintime.*), and lintime's model folders as torch modules.

    import lintime
    from lintime.ops import chunk_gsa, chunk_gla, parallel_based
    from lintime.nn import GatedSlotAttention
    model = lintime.load_model("path/to/model", device="cpu", dtype=torch.float32)
"""
from lintime._library import BUILD_TORCH_VERSION, CUDA_ARCHITECTURES, LIBRARY_PATH  # noqa: F401  (loads the ops)
from lintime import _fake  # noqa: F401  (shape functions for torch.compile)
from lintime import nn, ops  # noqa: F401
from lintime.models import LintimeModel, load_model  # noqa: F401

__version__ = "0.1.0"
