# Sourced by the GPU-machine call scripts (dev/generation/serve_device.sh,
# dev/training/train_device.sh): unpacks the xz-compressed binaries `make device-pack` carries
# in the folders given, points the loader at the GPU machine's torch and at BIN/lib (the Debian
# libraries it lacks), records the GPU in $out/gpu.txt, and defines has (is a word among $what)
# and since (a line stamped with the call's seconds). Needs bin, out and what set.
#   source dev/device_call.sh BIN [OTHER_BINARY_FOLDER...]
mkdir -p "$out"
for folder in "$@"; do
  for packed in "$folder"/*.xz "$folder"/lib/*.xz; do [[ -e $packed ]] && xz -d -f "$packed"; done
  chmod +x "$folder"/lintime "$folder"/*test* 2>/dev/null
done
torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:$torch_lib/../../nvidia/cu13/lib:$bin/lib:${LD_LIBRARY_PATH:-}"
export LINTIME_SOURCE_DIR=$PWD
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
has() { [[ " $what " == *" $1 "* ]]; }
since() { echo "[$(( SECONDS ))s] $*"; }
