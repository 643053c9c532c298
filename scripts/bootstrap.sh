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
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$torch_version') else 1)" 2>/dev/null; then
  echo "bootstrap: installing torch==$torch_version into .venv (about 2.7 GB download the first time)"
  .venv/bin/python -m pip install --progress-bar off -q --upgrade pip
  .venv/bin/python -m pip install --progress-bar off "torch==$torch_version" numpy
fi
echo "bootstrap: ok ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
