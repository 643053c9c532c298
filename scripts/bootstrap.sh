#!/usr/bin/env bash
# Installs everything lintime needs on a Debian 12 machine, idempotently:
# Debian packages (compiler, CMake, CLI11, nlohmann-json, toml++, GoogleTest, ...) and
# LibTorch from the PyPI wheel torch==2.11.0 in the project-local virtualenv .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(
  build-essential cmake ninja-build ccache git
  python3 python3-venv python3-pip
  libcli11-dev          # command-line parsing for the lintime binary
  nlohmann-json3-dev    # config.json, metrics, safetensors headers
  libtomlplusplus-dev   # training configs (configs/*.toml)
  libgtest-dev libgmock-dev  # tests
  libbenchmark-dev      # micro-benchmarks in bench/
  libsentencepiece-dev  # tokenizers (later issues)
  zlib1g-dev            # token shard CRC32, gzip-compressed text inputs
  libcpp-httplib-dev    # lintime serve's HTTP server
  libgloo-dev           # headers only: c10d's ProcessGroupGloo.hpp includes them (the torch wheel
                        # ships Gloo built in but not its headers); lintime links torch's copy
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

torch_version="2.11.0"
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  python3 -m venv .venv
fi
# Free space, in GiB, on the file system holding $1.
free_gib() { df -Pk "$1" | awk 'NR == 2 { printf "%d", $4 / 1048576 }'; }

if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$torch_version') else 1)" 2>/dev/null; then
  # The wheels (2.7 GB) are downloaded to TMPDIR and unpack to 4.7 GB in .venv. pip's own cache
  # would hold a second copy of the download, so it is off; a full disk fails here, up front,
  # with what is needed, rather than half-way through pip.
  tmp_dir="${TMPDIR:-/tmp}"
  need_venv=5; need_tmp=3
  [ "$(df -P .venv | awk 'NR == 2 { print $1 }')" = "$(df -P "$tmp_dir" | awk 'NR == 2 { print $1 }')" ] \
    && { need_venv=8; need_tmp=8; }
  if [ "$(free_gib .venv)" -lt "$need_venv" ] || [ "$(free_gib "$tmp_dir")" -lt "$need_tmp" ]; then
    echo "bootstrap: not enough disk for torch==$torch_version: $(free_gib .venv) GiB free for .venv" \
         "and $(free_gib "$tmp_dir") GiB in $tmp_dir; expected at least $need_venv GiB and $need_tmp GiB" >&2
    exit 1
  fi
  echo "bootstrap: installing torch==$torch_version into .venv (about 2.7 GB download the first time)"
  .venv/bin/python -m pip install --no-cache-dir --progress-bar off -q --upgrade pip
  .venv/bin/python -m pip install --no-cache-dir --progress-bar off "torch==$torch_version" numpy
fi
# matplotlib draws `lintime plot`'s PNGs (scripts/plot_runs.py); 3.11.2 has wheels for the Python 3.11 of .venv.
if ! .venv/bin/python -c "import matplotlib" 2>/dev/null; then
  echo "bootstrap: installing matplotlib==3.11.2 into .venv"
  .venv/bin/python -m pip install --no-cache-dir --progress-bar off -q "matplotlib==3.11.2"
fi
# pytest runs the Python package's tests (tests/python); scikit-build-core builds the package
# (pyproject.toml); the openai client talks to `lintime serve` in its tests; safetensors reads
# the fla layer fixtures.
if ! .venv/bin/python -c "import pytest, scikit_build_core, openai, safetensors" 2>/dev/null; then
  echo "bootstrap: installing pytest==9.2.0, scikit-build-core==1.1.2, openai==3.63.0, safetensors==0.8.0 into .venv"
  .venv/bin/python -m pip install --no-cache-dir --progress-bar off -q "pytest==9.2.0" "scikit-build-core==1.1.2" \
    "openai==3.63.0" "safetensors==0.8.0"
fi
echo "bootstrap: ok ($(.venv/bin/python -c 'import torch, matplotlib; print("torch", torch.__version__, "matplotlib", matplotlib.__version__)'))"
