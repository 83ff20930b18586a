# Set-up and the main jobs. Every target creates .venv when missing, installs the pinned
# requirements, builds the extension (C++ always, CUDA wherever nvcc is), then runs.
# Re-running is fast: each step is redone only when its inputs changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUILD := build
AARCH64_BUILD := $(BUILD)-aarch64
# torch guesses CUDA_HOME from nvcc on PATH, which may be a wrapper; point it at the toolkit.
ifeq ($(CUDA_HOME),)
ifneq ($(wildcard /usr/local/cuda/bin/nvcc),)
export CUDA_HOME := /usr/local/cuda
endif
endif
FASHION_MNIST := /usr/share/datasets/fashion-mnist
DNNL_HEADER := /usr/include/oneapi/dnnl/dnnl.hpp
SOURCES := setup.py $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h')
CPP_TESTS := $(wildcard tests/cpp/*) $(wildcard tests/stress/*.cpp) $(wildcard tests/capi/*) \
             $(wildcard bench/*.cpp)
# What else the CMake build reads: the C API's header, the package templates.
LIBRARY_FILES := $(wildcard include/*.h) $(wildcard cmake/*)
PREFIX ?= /usr/local

.PHONY: demo test test-aarch64 bench ctest install fuzz tsan system system-aarch64 clean help

help:
	@echo "make demo   the main job, on the embedded default data"
	@echo "make test   the test suite: C++ and C (ctest), the installed library (tests/install: the"
	@echo "            examples built against it), Python (pytest), benchmarks once without timing,"
	@echo "            and the GPU check's dry run (bench/gpu_check.sh --dry-run: its wiring), and"
	@echo "            make test-aarch64"
	@echo "make test-aarch64   the runtime and its C++ tests cross-built for aarch64 (NEON) and run"
	@echo "            under qemu-aarch64, with the model-level equality test (skipped, saying so,"
	@echo "            without g++-aarch64-linux-gnu or qemu-user)"
	@echo "make install PREFIX=P   the C and C++ library into P (default /usr/local): headers,"
	@echo "            libbranchy.a and .so, branchy-run, the CMake package and branchy.pc"
	@echo "make bench  the benchmarks, timed: the fused exit decision, the CPU engine vs peers"
	@echo "            (the paper's networks; torchvision networks vs ONNX Runtime and OpenVINO),"
	@echo "            the C API's cost per call against the C++ API's; writes bench/results/"
	@echo "make fuzz   libFuzzer on the model reader and plan builder, ASan + UBSan, 1,000,000 inputs"
	@echo "make tsan   4 threads x 10,000 mixed calls on one plan, equal to serial calls, under"
	@echo "            ThreadSanitizer (the runtime without oneDNN and OpenMP)"

$(VENV)/.deps: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

$(VENV)/.built: $(VENV)/.deps $(SOURCES) | system
	$(PY) -m pip install -q --no-build-isolation -e .
	@$(PY) -m branchy_engine.build_info
	@touch $@

$(BUILD)/.ctest-built: CMakeLists.txt $(SOURCES) $(CPP_TESTS) $(LIBRARY_FILES) | system
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build $(BUILD) -j 2
	@touch $@

# Debian packages: Fashion-MNIST (the default data), oneDNN (libdnnl-dev, native OpenMP build:
# the runtime layers where it beats the own kernels), valgrind (the profiler's cache simulator
# where the CPU's counters are not granted) and pkg-config (the install test builds the examples
# with it). Installed only when missing.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
system:
	@missing=""; test -d $(FASHION_MNIST) || missing="$$missing dataset-fashion-mnist"; \
	  test -f $(DNNL_HEADER) || missing="$$missing libdnnl-dev"; \
	  command -v valgrind > /dev/null || missing="$$missing valgrind"; \
	  command -v pkg-config > /dev/null || missing="$$missing pkg-config"; \
	  if [ -n "$$missing" ]; then echo "Installing (Debian):$$missing"; \
	    $(SUDO) apt-get install -y -q $$missing > /dev/null; fi

# The cross compiler and qemu-user for make test-aarch64, installed when missing; where that fails
# (no root, no Debian mirror) test-aarch64 says so and is skipped.
system-aarch64:
	@missing=""; command -v aarch64-linux-gnu-g++ > /dev/null || missing="$$missing g++-aarch64-linux-gnu"; \
	  command -v qemu-aarch64 > /dev/null || missing="$$missing qemu-user"; \
	  if [ -n "$$missing" ]; then echo "Installing (Debian):$$missing"; \
	    $(SUDO) apt-get install -y -q $$missing > /dev/null || echo "Could not install$$missing"; fi

# The C++ runtime's command-line runner alone: the cache simulator runs it (make demo).
$(BUILD)/branchy-run: CMakeLists.txt $(SOURCES) | system
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build $(BUILD) -j 2 --target branchy-run

ctest: $(BUILD)/.ctest-built
	ctest --test-dir $(BUILD) --output-on-failure

install: $(BUILD)/.ctest-built
	cmake --install $(BUILD) --prefix $(PREFIX)

test: $(VENV)/.built ctest
	PYTHON=$(PY) BUILD=$(BUILD) bash tests/install/run.sh
	PYTHON=$(PY) OUT=$(BUILD)/gpu-check bash bench/gpu_check.sh --dry-run
	BUILD=$(BUILD) $(PY) -m pytest bench/ -q --benchmark-disable
	$(PY) -m pytest tests/ -q
	$(MAKE) --no-print-directory test-aarch64

test-aarch64: $(VENV)/.built | system-aarch64
	PYTHON=$(PY) BUILD=$(AARCH64_BUILD) bash tests/aarch64/run.sh

bench: $(VENV)/.built
	$(VENV)/bin/branchy bench
	$(PY) bench/cpu_engine.py
	$(PY) bench/any_network.py
	$(PY) bench/denormals.py
	$(PY) bench/python_threads.py
	BUILD=$(BUILD) $(PY) bench/capi.py

fuzz: $(VENV)/.built
	RUNS=1000000 PYTHON=$(PY) bash tests/fuzz/run.sh

tsan: $(VENV)/.built
	THREADS=4 CALLS=10000 PYTHON=$(PY) bash tests/stress/run.sh

demo: $(VENV)/.built $(BUILD)/branchy-run
	$(VENV)/bin/branchy demo

clean:
	rm -rf $(BUILD) $(AARCH64_BUILD) branchy_engine/*.so *.egg-info $(VENV)/.built
