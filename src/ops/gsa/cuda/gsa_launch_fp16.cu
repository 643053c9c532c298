// Instantiates the GSA launchers for __half elements (one file per type: parallel compilation).
#include "ops/gsa/cuda/gsa_launch.cuh"

namespace lintime::cuda {
LINTIME_INSTANTIATE_GSA_LAUNCHERS(__half)
}  // namespace lintime::cuda
