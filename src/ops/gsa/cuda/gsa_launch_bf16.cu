// Instantiates the GSA launchers for __nv_bfloat16 elements (one file per type: parallel compilation).
#include "ops/gsa/cuda/gsa_launch.cuh"

namespace lintime::cuda {
LINTIME_INSTANTIATE_GSA_LAUNCHERS(__nv_bfloat16)
}  // namespace lintime::cuda
