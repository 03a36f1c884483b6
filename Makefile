# Thresher: every target installs what it needs and is safe to re-run.
#   make demo   local control plane + operator + example schedules
#   make test   unit, integration (real control plane) and tool-judged tests
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HASH   := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
# Two stamps: the base install (everything the demo and most tests need) and the gpu extra
# (the torch tests of `make test` only), so `make demo` never downloads the CUDA torch wheel.
STAMP     := $(VENV)/.installed-base-$(HASH)
GPU_STAMP := $(VENV)/.installed-gpu-$(HASH)
PYTEST_ARGS ?=

.PHONY: all venv venv-gpu binaries tools images release node-tools test-realnode demo demo-down test test-unit test-integration bench crd lint clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[operator,jobs,dev]'
	rm -f $(VENV)/.installed-base-* && touch $@

# PyPI's Linux torch is the CUDA build (about 2.8 GB to download, 5 GB installed); it imports
# and runs on a CPU-only machine, which is how `make test` proves the torch path gives the
# NumPy path's numbers (docs/drone.md). The demo and users who never need it skip `.[gpu]`.
$(GPU_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[gpu]'
	rm -f $(VENV)/.installed-gpu-* && touch $@

venv: $(STAMP)

venv-gpu: $(GPU_STAMP)

# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok, helm, kubelet, kube-proxy:
# from PATH, THRESHER_BIN_DIR or ~/.cache/thresher, else built once from the Go module proxy.
binaries: venv
	$(BIN)/python -m thresher.devcluster.binaries etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm kubelet kube-proxy

# The opt-in real node (`thresher dev up --node`, docs/devcluster.md "Real node"): Debian's
# containerd, runc, CNI plugins, buildah and debootstrap; its registry: docker-registry (the CNCF
# distribution registry 2.8), htpasswd (apache2-utils) and skopeo (pushes). Needs root.
node-tools:
	@command -v containerd >/dev/null && command -v runc >/dev/null && command -v buildah >/dev/null \
	  && command -v debootstrap >/dev/null && test -x /usr/lib/cni/bridge && command -v docker-registry >/dev/null \
	  && command -v htpasswd >/dev/null && command -v skopeo >/dev/null || { \
	  echo "installing containerd runc containernetworking-plugins buildah debootstrap iptables docker-registry apache2-utils skopeo from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    containerd runc containernetworking-plugins buildah debootstrap iptables docker-registry apache2-utils skopeo >/dev/null; }

# Thresher's operator and jobs images, built with buildah on a local debootstrap base (no
# Docker), cached as OCI archives in ~/.cache/thresher/images and pushed (skopeo) to the registry
# of the real node running in THRESHER_STATE_DIR (or the default), printing each digest.
images: venv node-tools
	$(BIN)/thresher dev images --push-to "$${THRESHER_STATE_DIR:-$$HOME/.local/state/thresher/dev}" pause jobs operator

# Publish: build every image and the chart, push them to REGISTRY (log in first: `skopeo login`
# or `buildah login`, and `helm registry login`), print references and digests. IMAGES narrows it
# (jobs-gpu pulls the CUDA runtime base and the 2.8 GB torch wheel).
IMAGES ?= operator jobs jobs-gpu
release: venv node-tools
	@test -n "$(REGISTRY)" && test -n "$(VERSION)" || { echo "usage: make release REGISTRY=host[/path] VERSION=x.y.z [IMAGES='operator jobs']"; exit 2; }
	$(BIN)/thresher dev release --registry "$(REGISTRY)" --version "$(VERSION)" $(foreach i,$(IMAGES),--image $(i))

# Thresher's jobs as real containers on the real node (its own cluster in a temp state dir).
test-realnode: venv binaries node-tools
	THRESHER_DEV_NODE=1 $(BIN)/pytest tests/realnode $(PYTEST_ARGS)

# Upstream judges: promtool and amtool for the monitoring pieces, gdalinfo and ogrinfo for the
# drone job's orthomosaic outputs (Debian's packages).
tools:
	@command -v promtool >/dev/null && command -v amtool >/dev/null || { \
	  echo "installing prometheus and prometheus-alertmanager (promtool, amtool) from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null; }
	@command -v gdalinfo >/dev/null && command -v ogrinfo >/dev/null || { \
	  echo "installing gdal-bin (gdalinfo, ogrinfo) from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gdal-bin >/dev/null; }

# As root the demo runs its jobs as real containers on a local kubelet node (node-tools; the
# images are built on first use, about 4 minutes, cached after); otherwise on kwok's simulated
# nodes, and it says so. `thresher demo --no-node` forces the simulated mode.
demo: venv binaries tools $(if $(filter 0,$(shell id -u)),node-tools)
	$(BIN)/thresher demo

demo-down: venv
	$(BIN)/thresher demo --down

# Everything, the real-node tests included (root; containerd, runc, CNI, buildah from Debian).
test: venv-gpu binaries tools node-tools
	THRESHER_REQUIRE_TORCH=1 THRESHER_DEV_NODE=1 $(BIN)/pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: venv binaries tools
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

bench: venv binaries
	$(BIN)/python benchmarks/run_all.py

crd: venv
	$(BIN)/thresher crd generate

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
