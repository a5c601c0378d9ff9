# streamcast: `make run` runs the demo, `make test` runs every test. Both work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
ORT_VERSION := 1.31.1
ORT_STAMP := $(VENV)/.onnxruntime-$(ORT_VERSION)
# The test broker: a real Kafka-compatible process, installed once per user and reused by CI's
# fresh clones on the same machine. nisshi 0.6.0: 0.7+ needs a newer rustc; tansu 0.6.0 skips
# records after a mid-batch commit.
NISSHI_VERSION := 0.6.0
NISSHI_ROOT ?= $(HOME)/.local/share/streamcast/nisshi-$(NISSHI_VERSION)
NISSHI := $(NISSHI_ROOT)/bin/nisshi
CARGO_FLAGS ?= --release --locked
# librdkafka is built by CMake (rdkafka's `cmake-build` feature): its other build system, mklove,
# cannot link the static libcurl that OAUTHBEARER's OIDC token fetch needs. CMake comes from its
# PyPI wheel into the project virtualenv; set CMAKE to use another one.
CMAKE_VERSION := 3.31.10
CMAKE_STAMP := $(VENV)/.cmake-$(CMAKE_VERSION)
export CMAKE ?= $(CURDIR)/$(VENV)/bin/cmake

.PHONY: run test chaos chaos-short build cmake ort ort-gpu gpu-check test-deps broker bench bundles clean-venv

run: ort build
	./target/release/streamcast demo

build: cmake
	cargo build $(CARGO_FLAGS)

cmake: $(CMAKE_STAMP)
$(CMAKE_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check cmake==$(CMAKE_VERSION)
	touch $@

# ONNX Runtime's shared library comes from the pinned PyPI wheel, in a project-local virtualenv.
ort: $(ORT_STAMP)
$(ORT_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check onnxruntime==$(ORT_VERSION)
	touch $@

# The CUDA build of ONNX Runtime for machines with an NVIDIA GPU, in its own virtualenv so the CPU
# wheel in $(VENV) stays as it is. The `cuda` and `cudnn` extras pull the CUDA runtime, cuBLAS,
# cuFFT, cuRAND, NVRTC and cuDNN wheels that this onnxruntime-gpu release was built against (CUDA 13
# and cuDNN 9 for 1.31; the NVIDIA driver must support CUDA 13). Everything comes from PyPI.
# scripts/gpu-check.sh shows the two variables a CUDA run needs: ORT_DYLIB_PATH and LD_LIBRARY_PATH.
GPU_VENV := .venv-gpu
GPU_STAMP := $(GPU_VENV)/.onnxruntime-gpu-$(ORT_VERSION)
ort-gpu: $(GPU_STAMP)
$(GPU_STAMP):
	$(PYTHON) -m venv $(GPU_VENV)
	echo '*' > $(GPU_VENV)/.gitignore
	$(GPU_VENV)/bin/pip install --quiet --disable-pip-version-check "onnxruntime-gpu[cuda,cudnn]==$(ORT_VERSION)"
	touch $@

# CUDA against CPU on every shipped bundle: equal predictions within 1e-4, and batch timings.
gpu-check: ort-gpu build
	GPU_VENV=$(GPU_VENV) scripts/gpu-check.sh --json target/gpu-check.json

# The independent end-to-end client used by some integration tests and the benchmark.
TEST_STAMP := $(VENV)/.test-deps
test-deps: $(TEST_STAMP)
$(TEST_STAMP): $(ORT_STAMP) scripts/requirements-test.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
	touch $@

broker: $(NISSHI)
$(NISSHI):
	@echo "Installing nisshi $(NISSHI_VERSION) to $(NISSHI_ROOT) (once per user; about 17 minutes on 2 cores)"
	cargo install nisshi@$(NISSHI_VERSION) --locked --no-default-features --features dynostore --root $(NISSHI_ROOT)

test: ort cmake test-deps broker
	cargo build $(CARGO_FLAGS) --tests --bins
	$(VENV)/bin/python scripts/check_deploy.py
	$(PYTHON) scripts/module_cycles.py
	set -o pipefail; NISSHI=$(NISSHI) scripts/with-broker.sh cargo test $(CARGO_FLAGS) --no-fail-fast --lib --bins --tests \
		-- --test-threads=2 2>&1 | tee target/test-output.log
	@awk '/^test result:/ {p += $$4; f += $$6} END {printf "all test binaries: %d passed, %d failed\n", p, f}' target/test-output.log

# The chaos suite: faults mid-run against a broker the suite owns (it stops and continues it),
# plus the hostile-input scenarios that `make test` also runs (signed decisions, symlink escape,
# SIGTERM with pending reloads). One line per scenario; `chaos-short` is the form CI runs.
CHAOS_RUN = cargo test $(CARGO_FLAGS) --test chaos --test hostile -- --include-ignored --test-threads=1 --nocapture
chaos: ort cmake test-deps broker
	set -o pipefail; NISSHI=$(NISSHI) $(CHAOS_RUN) 2>&1 | tee target/chaos-output.log | grep -E '^(chaos:|test |test result|thread|  left|  right|assertion)'

chaos-short: ort cmake test-deps broker
	set -o pipefail; CHAOS_SCALE=short NISSHI=$(NISSHI) $(CHAOS_RUN) 2>&1 | tee target/chaos-output.log | grep -E '^(chaos:|test |test result|thread|  left|  right|assertion)'

# streamcast against a tuned Python worker and a notebook-style one (bench/README.md); the Python
# workers' packages (kafka-python, pandas, orjson) are pinned in bench/requirements.txt.
BENCH_STAMP := $(VENV)/.bench-deps
$(BENCH_STAMP): $(TEST_STAMP) bench/requirements.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $@

bench: ort test-deps broker build $(BENCH_STAMP)
	cargo build $(CARGO_FLAGS) --example ort_ceiling --example loadgen
	NISSHI=$(NISSHI) scripts/with-broker.sh $(VENV)/bin/python scripts/bench.py
	NISSHI=$(NISSHI) scripts/with-broker.sh $(VENV)/bin/python scripts/idle_cpu.py

# Rebuild the sample bundles and test fixtures from the statsmodels CO2 record.
bundles:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r scripts/requirements-bundles.txt
	$(VENV)/bin/python scripts/build_bundles.py

clean-venv:
	rm -rf $(VENV) .venv-gpu

# Azurite (Microsoft's Azure Storage emulator, from npm) for tests/object_store.rs's az:// root.
AZURITE_VERSION := 3.35.0
AZURITE_STAMP := $(VENV)/.azurite-$(AZURITE_VERSION)
test-deps: $(AZURITE_STAMP)
$(AZURITE_STAMP): $(ORT_STAMP)
	npm install --silent --no-audit --no-fund --prefix $(VENV)/node azurite@$(AZURITE_VERSION)
	touch $@

# The Python package that makes bundles from scikit-learn and PyTorch models (python/README.md),
# installed into $(VENV) the way a user installs it (`pip install ./python`), again whenever its
# sources change: tests/byom.rs runs its scikit-learn walk-through and its unit tests.
BYOM_SOURCES := python/pyproject.toml $(wildcard python/streamcast_bundle/*.py)
BYOM_STAMP := $(VENV)/.streamcast-bundle
test-deps: $(BYOM_STAMP)
$(BYOM_STAMP): $(TEST_STAMP) $(BYOM_SOURCES)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check ./python
	touch $@

# The PyTorch walk-through (tests/byom_torch.rs, ignored by `make test`) in its own virtualenv,
# since torch is large. PyPI's torch wheel for x86_64 Linux is the CUDA build (it pulls the
# nvidia-* wheels, a few GB); PyTorch's CPU-only index (download.pytorch.org) is not reachable
# from every build machine, so this takes PyPI's. The test runs it on the CPU.
TORCH_VENV := .venv-torch
TORCH_VERSION := 2.15.0
TORCH_STAMP := $(TORCH_VENV)/.torch-$(TORCH_VERSION)
$(TORCH_STAMP):
	$(PYTHON) -m venv $(TORCH_VENV)
	echo '*' > $(TORCH_VENV)/.gitignore
	$(TORCH_VENV)/bin/pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION) numpy==2.4.6 onnx==1.23.2 onnxruntime==$(ORT_VERSION)
	touch $@
TORCH_BYOM_STAMP := $(TORCH_VENV)/.streamcast-bundle
$(TORCH_BYOM_STAMP): $(TORCH_STAMP) $(BYOM_SOURCES)
	$(TORCH_VENV)/bin/pip install --quiet --disable-pip-version-check ./python
	touch $@

.PHONY: test-torch
test-torch: ort cmake test-deps broker $(TORCH_BYOM_STAMP)
	cargo build $(CARGO_FLAGS) --tests --bins
	STREAMCAST_TORCH_PYTHON=$(CURDIR)/$(TORCH_VENV)/bin/python NISSHI=$(NISSHI) scripts/with-broker.sh cargo test $(CARGO_FLAGS) --test byom_torch -- --ignored --test-threads=1
