# Bulkhead — the two commands a user needs are `make demo` and `make test`.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all build deps crds lint unit fuzz fuzz-brief integration test up down demo bench images help selinux-image selinux-host selinux-host-down kind-tools test-selinux kind-image kind-up kind-down test-kind

all: build

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

deps: ## install what this machine lacks (Debian packages, the pinned Go-built control plane)
	bash e2e/hack/install-deps.sh

build: ## build the binaries (controller, node agent, kubectl-bulkhead plugin)
	$(CARGO) build --workspace --bins

crds: ## regenerate the CRDs and the isolation-level policy in charts/bulkhead from the Rust types
	$(CARGO) run -q -p bulkhead-crds --bin crdgen -- charts/bulkhead

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: ## unit tests: no cluster, no kernel
	$(CARGO) test --workspace --exclude bulkhead-e2e

fuzz: ## fuzz the image reference and manifest/index parsers, 30 s each (FUZZ_SECONDS=n for longer)
	bash fuzz/run.sh $${FUZZ_SECONDS:-30}

fuzz-brief: # part of `make test`: each fuzz target for 15 s, when its instrumented build is cached (a cold one takes 10+ minutes: `make fuzz` makes it)
	@if bash fuzz/run.sh --built; then bash fuzz/run.sh 15; \
	else echo "[fuzz] skipped: the fuzz targets are not built yet (make fuzz builds them, 10+ minutes cold)"; fi

integration: ## integration and end-to-end tests against the real local control plane
	bash e2e/hack/test.sh

test: lint unit fuzz-brief integration ## the whole suite

up: ## start the local system (idempotent); kubeconfig at .bulkhead/kubeconfig
	bash e2e/hack/up.sh

down: ## stop everything `make up` started and remove its state
	bash e2e/hack/down.sh

bench: ## benchmarks beside their baselines (~15 min): target/bench/report.md and charts
	bash bench/hack/bench.sh

demo: ## install, build, start the local system and run the demo
	bash e2e/hack/demo.sh

images: ## container images without Docker: target/images/*.tar from release binaries, for `kind load image-archive`
	$(CARGO) build --release -p bulkhead-controller -p bulkhead-node-agent --bins
	bash e2e/hack/oci-images.sh

selinux-image: ## the SELinux-enforcing test host's disk image (debootstrap + refpolicy container module + e2e/selinux/bulkhead_glue.te), cached by content (~10 min cold)
	bash e2e/selinux/image.sh

selinux-host: ## boot the SELinux-enforcing VM selinux-1 (qemu TCG) with this checkout's release agent, registered with the local system (make up first)
	$(CARGO) build --release -p bulkhead-node-agent
	bash e2e/selinux/host.sh up

selinux-host-down: ## stop the VM selinux-1 by its PID and delete its Host
	bash e2e/selinux/host.sh down

test-selinux: ## boot the SELinux-enforcing VM selinux-1 (make selinux-image, cached) with this checkout's agent and run the tests that need it
	bash e2e/selinux/test.sh

kind-tools: ## kubelet, kubeadm, kubectl, kube-scheduler, kind and coredns for a registry-free kind node image, cached by version
	bash e2e/hack/kind-tools.sh

kind-image: ## the registry-free kind node image (Debian packages + Go-built Kubernetes and its images), cached by version in ~/.cache/bulkhead/kind
	bash e2e/hack/install-deps.sh --kind
	bash e2e/hack/kind-image.sh

kind-up: images ## a kind cluster (podman provider) with the chart installed and the examples applied; KUBECONFIG=.bulkhead/kind/kubeconfig
	bash e2e/hack/kind-up.sh

kind-down: ## delete the kind cluster and undo kind-up's host preparation
	bash e2e/hack/kind-down.sh

test-kind: images ## the chart on a real kind node (podman): the install.md walkthrough verbatim, isolation read back in the node, blue/green under a 20 ms client with an agent restart, helm upgrade/uninstall
	bash e2e/hack/kind-test.sh
