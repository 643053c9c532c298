# lintime: the two commands of the README, plus the steps they are made of.
#   make run   installs what is needed, builds, trains GSA on MQAR (on the GPU when present, else CPU)
#   make test  installs what is needed, builds, runs every test
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
# The small setting reaches 99% in about a minute on 2 CPU cores and in seconds on a GPU (the
# device is chosen by --device auto). The GSA-paper setting (RUN_CONFIG=configs/mqar/gsa-paper-d128.toml)
# runs through the general ATen path on a GPU until the fused CUDA kernels land.
RUN_CONFIG ?= configs/mqar/gsa-small.toml

.PHONY: setup configure build run test bench clean

setup:
	bash scripts/bootstrap.sh

configure: setup
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	$(BUILD_DIR)/lintime train $(RUN_CONFIG) --device auto --out runs/make-run

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

bench: build
	$(BUILD_DIR)/lintime bench gsa --device cpu

clean:
	rm -rf $(BUILD_DIR)
