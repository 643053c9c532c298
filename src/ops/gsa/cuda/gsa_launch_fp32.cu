// Instantiates the GSA launchers for float elements (one file per type: parallel compilation).
#include "ops/gsa/cuda/gsa_launch.cuh"

namespace lintime::cuda {
LINTIME_INSTANTIATE_GSA_LAUNCHERS(float)
}  // namespace lintime::cuda
