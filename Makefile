# lintime: the two commands of the README, plus the steps they are made of.
#   make run   installs what is needed, builds, trains GSA on MQAR (the paper's setting on a GPU, a small one on a CPU)
#   make test  installs what is needed, builds, runs every test
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
# On a machine with an NVIDIA GPU, make run trains the GSA paper's MQAR setting (L 512, 64 pairs,
# d 128) at one learning rate of its sweep (lr 1e-3; the whole sweep: RUN_ARGS=) through the
# fused CUDA kernels: 21.6 steps/s measured on an H100, up to 64 epochs with early stop at 99%
# (whether it reaches the paper's accuracy is not shown yet: BENCHMARKS.md).
# Elsewhere it trains the small setting, which reaches 99% in about a minute on 2 CPU cores.
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_GPU),yes)
RUN_CONFIG ?= configs/mqar/gsa-paper-d128.toml
RUN_ARGS ?= --set 'train.lr_sweep=[]'
else
RUN_CONFIG ?= configs/mqar/gsa-small.toml
RUN_ARGS ?=
endif

.PHONY: setup configure build run test test-python python-package bench clean

setup:
	bash scripts/bootstrap.sh

configure: setup
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

# Each `make run` trains afresh: the previous run's folder goes first.
run: build
	rm -rf runs/make-run
	$(BUILD_DIR)/lintime train $(RUN_CONFIG) --device auto --out runs/make-run $(RUN_ARGS)

# ctest counts skipped tests as passed; ctest_summary.py prints how many were skipped and why.
# Then the Python package: installed into .venv by pip from the build tree, and its tests run
# against the installed copy (test-python runs them against build/python without installing).
test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --output-junit $(abspath $(BUILD_DIR))/ctest-junit.xml; \
	  status=$$?; python3 $(CURDIR)/scripts/ctest_summary.py $(abspath $(BUILD_DIR))/ctest-junit.xml; exit $$status
	$(MAKE) --no-print-directory python-package

test-python: build
	PYTHONPATH=$(abspath $(BUILD_DIR))/python LINTIME_BINARY=$(abspath $(BUILD_DIR))/lintime \
	  .venv/bin/python -m pytest -q -p no:cacheprovider tests/python

# The package installed into .venv as a user would (pip, scikit-build-core), then its tests
# against the installed copy. pip builds in the build tree with its settings unchanged, so what
# `make build` compiled is reused (a plain `pip install .` builds afresh in build/wheel).
python-package: build
	.venv/bin/python -m pip install --no-build-isolation --no-deps --force-reinstall -q \
	  -C build-dir=$(BUILD_DIR) -C cmake.define.LINTIME_BUILD_TESTS=ON -C cmake.define.LINTIME_BUILD_BENCH=ON .
	cd tests/python && LINTIME_BINARY=$(abspath $(BUILD_DIR))/lintime ../../.venv/bin/python -m pytest -q -p no:cacheprovider .

bench: build
	$(BUILD_DIR)/lintime bench gsa --device cpu

clean:
	rm -rf $(BUILD_DIR)
