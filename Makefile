# lintime: the two commands of the README, plus the steps they are made of.
#   make run   installs what is needed, builds, trains GSA on MQAR (the paper's setting on a GPU, a small one on a CPU)
#   make test  installs what is needed, builds, runs every test
SHELL := /bin/bash
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

.PHONY: setup configure build run test test-python python-package bench fuzz test-sanitize device-pack clean

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

# libFuzzer over the fuzz targets (tests/fuzz/fuzz_targets.h; make test replays their corpus and
# mutations of it): clang with ASan and UBSan in $(FUZZ_DIR), CPU only, FUZZ_SECONDS per target
# from tests/fuzz/corpus; new inputs gather in $(FUZZ_DIR)/corpus, crashes in $(FUZZ_DIR)/crash-*
# (copy one into tests/fuzz/regressions/TARGET/ once it is fixed). FUZZ_TARGETS picks some;
# FUZZ_RUNS > 0 ends a target after that many executions (10000000: the issue's figure) if
# FUZZ_SECONDS has not ended it first. The harnesses write their inputs as files: into /dev/shm
# where there is one (bpe_tokenizer: 1.6x the executions per second of the disk of the 2-core VM).
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_RUNS ?= -1
FUZZ_TMPDIR := $(if $(wildcard /dev/shm),/dev/shm,$(or $(TMPDIR),/tmp))
FUZZ_TARGETS ?= $(notdir $(wildcard tests/fuzz/corpus/*))
SANITIZER_OPTIONS = ASAN_OPTIONS=detect_leaks=0:alloc_dealloc_mismatch=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fuzz: setup
	CC=clang CXX=clang++ cmake -S . -B $(FUZZ_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLINTIME_FUZZ=ON \
	  -DLINTIME_CUDA=OFF -DLINTIME_BUILD_BENCH=OFF >/dev/null
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target lintime_fuzz
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$t && cp tests/fuzz/corpus/$$t/* $(FUZZ_DIR)/corpus/$$t/ && \
	  echo "fuzz $$t for $(FUZZ_SECONDS) s" && \
	  TMPDIR=$(FUZZ_TMPDIR) LINTIME_FUZZ_TARGET=$$t $(SANITIZER_OPTIONS) $(FUZZ_DIR)/tests/lintime_fuzz \
	    -max_total_time=$(FUZZ_SECONDS) -runs=$(FUZZ_RUNS) \
	    -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/crash-$$t- \
	    $(FUZZ_DIR)/corpus/$$t 2>&1 | grep -E "^#[0-9]+ +DONE|stat::number_of_executed_units|lintime_fuzz|ERROR|SUMMARY" ; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

# Every CPU test under AddressSanitizer and UndefinedBehaviorSanitizer, in build-sanitize
# (about 3x slower than make test; CUDA tests skip without a GPU).
test-sanitize: setup
	cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLINTIME_SANITIZE=ON -DLINTIME_CUDA=OFF \
	  -DLINTIME_BUILD_BENCH=OFF >/dev/null
	cmake --build build-sanitize -j $(JOBS)
	cd build-sanitize && $(SANITIZER_OPTIONS) ctest --output-on-failure -j $(JOBS) -LE cuda

# What a call to the GPU machine carries (.device, ignored): lintime and every CUDA test in one
# binary, built for the H100/H200 alone (sm_90a), stripped and xz-compressed (about 13 MB), the
# Debian libraries that machine lacks, and LM shards and a tokenizer for random-weight model
# folders when ../shared/data is there. Used by dev/generation/serve_device.sh.
DEVICE_DIR ?= .device
DEVICE_BUILD_DIR ?= build-h200
device-pack: setup
	cmake -S . -B $(DEVICE_BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DLINTIME_CUDA=ON -DLINTIME_CUDA_ARCHS=90a >/dev/null
	cmake --build $(DEVICE_BUILD_DIR) -j $(JOBS) --target lintime_cli lintime_cuda_tests
	mkdir -p $(DEVICE_DIR)/lib
	strip -o $(DEVICE_DIR)/lintime $(DEVICE_BUILD_DIR)/lintime
	strip -o $(DEVICE_DIR)/lintime_cuda_tests $(DEVICE_BUILD_DIR)/tests/lintime_cuda_tests
	xz -T$(JOBS) -6 -f $(DEVICE_DIR)/lintime $(DEVICE_DIR)/lintime_cuda_tests
	for l in $$(ldd $(DEVICE_BUILD_DIR)/lintime | grep -oE '/lib/x86_64-linux-gnu/lib(tomlplusplus|sentencepiece|cpp-httplib|brotli[a-z]*)\.so[.0-9]*'); do \
	  cp -L $$l $(DEVICE_DIR)/lib/; done
	if [ -d ../shared/data ]; then \
	  cp ../shared/data/llama2-tokenizer.model $(DEVICE_DIR)/tokenizer.model && rm -rf $(DEVICE_DIR)/llama2-shards && \
	  $(DEVICE_BUILD_DIR)/lintime tokenize --tokenizer ../shared/data/llama2-tokenizer.model ../shared/data/tinyshakespeare.txt \
	    --split-blank-lines --val-fraction 0.05 --out $(DEVICE_DIR)/llama2-shards >/dev/null; fi
	du -sh $(DEVICE_DIR)

bench: build
	$(BUILD_DIR)/lintime bench gsa --device cpu

clean:
	rm -rf $(BUILD_DIR)
