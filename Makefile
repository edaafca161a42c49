# asr-platform: the two commands that matter are `make serve` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: venv serve test lint fmt e2e bench demo-model clean cluster cluster-down images

venv: $(STAMP)

# torch first, pinned: the CPU wheel is local; a looser spec pulls GBs of CUDA packages.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[inference,operator,bench,test,dev]'
	# asr-bench's funasr-onnx peer, without its numpy<=1.26.4 pin (it runs on numpy 2; the pin would downgrade
	# the whole venv); its other dependencies come with funasr.
	$(BIN)/pip install -q --no-deps funasr-onnx==0.4.3
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/asr-serve --host $(HOST) --port $(PORT) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

e2e: $(STAMP)
	$(BIN)/python -m pytest -q -ra e2e

bench: $(STAMP)
	$(BIN)/asr-bench $(BENCH_ARGS)

# Retrain the embedded demo model (25-30 min on 2 cores; needs espeak-ng + sox). See tools/demo_model/README.md.
demo-model: $(STAMP)
	tools/demo_model/build.sh inference/asr_inference/models/demo $${DEMO_WORK:-/tmp/demo_work}

# A local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok fake nodes) from binaries built
# once into ~/.cache/asr-platform/cluster (tools/cluster/build.sh; cold build ~30 min on 2 cores, then a no-op).
# `make cluster` writes .cluster/kubeconfig; `make cluster-down` stops it and deletes its data.
# `make cluster REAL_NODE=1` (root) adds a real node: containerd + kubelet + kube-proxy, a loopback registry, the
# network fenced so no packet leaves (tools/cluster/realnode.py); `make cluster-down` puts the host back.
# `make cluster REAL_NODE=1 AUTOSCALING=1` adds Prometheus, KEDA and prometheus-adapter (tools/cluster/autoscalers.py).
cluster:
	$(PY) tools/cluster/cluster.py up --bin "$$(tools/cluster/build.sh | tail -n 1)" $(if $(REAL_NODE),--real-node) \
		$(if $(AUTOSCALING),--autoscaling)

cluster-down:
	$(PY) tools/cluster/cluster.py down

# Both images, built with buildah (no daemon; root, buildah, podman, mmdebstrap) and cached by content, so a second
# run is a no-op. Here the base is a Debian bookworm image made by mmdebstrap and torch comes from PyPI (nothing else
# is reachable); BASE_IMAGE / TORCH_INDEX_URL select the official ones. See tools/images/build.py.
images:
	$(PY) tools/images/build.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
