# kube-gpu-exporter. `make run` serves metrics (a simulated node where no GPU
# driver is found); `make test` installs what the tests need and runs them all.

GO        ?= go
BIN       := bin/kube-gpu-exporter
SIM_BIN   := bin/kube-gpu-exporter-sim
PLUGIN_BIN := bin/kubectl-gpu
TOOLS     := $(CURDIR)/.tools/bin
# scripts/build-flags.sh holds the flags every build uses (VERSION=...
# overrides the version stamp).
LDFLAGS   := $(shell scripts/build-flags.sh ldflags)
HELM_VERSION      := v3.22.0
KUSTOMIZE_VERSION := v5.8.2
GOLANGCI_LINT_VERSION := v2.15.0
FUZZTIME  ?= 10s
# Runs spent shrinking each new input the fuzzer finds. Go's default is 60 s
# per input, tried over and over on inputs of kilobytes (a scenario file),
# during which the run count stands still and a -fuzztime deadline can pass.
FUZZMIN   ?= 1000x

export CGO_ENABLED := 1
export CGO_CFLAGS  := $(shell scripts/build-flags.sh cgo-cflags)
export PATH        := $(TOOLS):$(PATH)

.PHONY: all build run test test-race test-unit test-gpu deps lint lint-deps fuzz bench bench-once bench-scale soak dashboards screenshot clean

all: lint test build

# The production exporter, kube-gpu-exporter-sim, the same exporter on a
# simulated node (which only the latter links), and the kubectl plugin
# kubectl-gpu (put it on PATH: `kubectl gpu top nodes`).
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/exporter
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(SIM_BIN) ./cmd/kube-gpu-exporter-sim
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(PLUGIN_BIN) ./cmd/kubectl-gpu

# Runs against the real driver when libnvidia-ml is installed, else on the
# built-in simulated node.
run: build
	@if ldconfig -p 2>/dev/null | grep -q libnvidia-ml.so.1; then \
		echo "NVIDIA driver found: serving this node on :9871"; ./$(BIN); \
	else \
		echo "no NVIDIA driver: serving the built-in simulated node on :9871"; ./$(SIM_BIN); \
	fi

# Everything the tests need: promtool/prometheus, containerd/runc and
# chromium (Debian packages; the services they install stay stopped), helm and kustomize
# (built from the Go module proxy into .tools/bin), and the etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler and kubelet of
# test/kubeapi and test/node (scripts/kube-tools.sh, cached under
# ~/.cache/kube-gpu-exporter/kube/<version> and linked into .tools/bin).
deps:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
		echo "installing prometheus (Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
		systemctl disable --now prometheus >/dev/null 2>&1 || true; }
	@command -v containerd >/dev/null && command -v ctr >/dev/null && command -v runc >/dev/null || { \
		echo "installing containerd and runc (Debian packages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd runc >/dev/null; \
		systemctl disable --now containerd >/dev/null 2>&1 || true; }
	@command -v chromium >/dev/null || { \
		echo "installing chromium (Debian package), for the status page's browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@test -x $(TOOLS)/helm || { echo "building helm $(HELM_VERSION)"; GOBIN=$(TOOLS) CGO_ENABLED=0 $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); }
	@test -x $(TOOLS)/kustomize || { echo "building kustomize $(KUSTOMIZE_VERSION)"; GOBIN=$(TOOLS) CGO_ENABLED=0 $(GO) install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION); }
	@GO=$(GO) scripts/kube-tools.sh

# golangci-lint, built from the Go module proxy into .tools/bin.
lint-deps:
	@$(TOOLS)/golangci-lint version 2>/dev/null | grep -q "$(GOLANGCI_LINT_VERSION:v%=%)" || { echo "building golangci-lint $(GOLANGCI_LINT_VERSION)"; GOBIN=$(TOOLS) CGO_ENABLED=0 $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION); }

test: deps lint
	$(GO) test -count=1 ./...
	$(MAKE) test-race

# The packages with goroutines of their own, under the race detector.
test-race:
	$(GO) test -race -count=1 ./collector/... ./nvml/... ./podresources/... ./kube/... ./cgroup/... ./internal/exporter/... ./cmd/...

test-unit:
	$(GO) test -short ./...

lint: lint-deps
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) mod tidy -diff
	$(TOOLS)/golangci-lint run ./...

# Each fuzz target for a short fixed time; the seed corpora run in `make test`.
fuzz:
	$(GO) test ./podresources -run '^$$' -fuzz '^FuzzParseDeviceID$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN)
	$(GO) test ./podresources -run '^$$' -fuzz '^FuzzConvert$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN)
	$(GO) test ./simulate -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN)
	$(GO) test ./cgroup -run '^$$' -fuzz '^FuzzParseFile$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN)

# Benchmarks against the floor and the running binary's RSS, CPU and start-up
# time, printed as one table (docs/performance.md).
bench:
	scripts/bench.sh

# What a fleet costs (docs/scale.md): a real Prometheus scraping SCALE_NODES
# simulated nodes (scripts/scale-prometheus.sh), then a real kube-apiserver
# serving SCALE_WATCH_NODES nodes' kubelet and exporter watches while pods
# churn. Minutes, and the numbers are this machine's: not part of `make test`.
SCALE_WATCH_NODES ?= 200
SCALE_CHURN       ?= 20s
bench-scale:
	scripts/scale-prometheus.sh
	SCALE_WATCH_NODES=$(SCALE_WATCH_NODES) SCALE_CHURN=$(SCALE_CHURN) $(GO) test ./test/scale -run '^$$' -bench APIServerWatches -benchtime=1x -timeout 30m

# CI only checks that the benchmarks compile and run once; timings on shared
# machines mean nothing.
bench-once:
	$(GO) test -run '^$$' -bench . -benchtime=1x ./...

# Not part of CI: 10 minutes on a simulated node whose pods churn
# (SOAK_DURATION=1m for a quick check).
soak:
	scripts/soak.sh

# Real-GPU validation: needs an NVIDIA GPU and driver (docs/gpu-validation.md).
test-gpu:
	test/gpu/run.sh

# Regenerate dashboards/*.json from their Go definitions.
dashboards:
	$(GO) test ./dashboards -run TestGenerated -update -count=1

# Regenerate docs/img/status-page.png: the built-in simulated node's page
# at /, rendered in headless Chromium by the test that checks it.
screenshot:
	$(GO) test ./cmd/exporter -run '^TestStatusPageInChromium$$' -count=1 -status-page.screenshot=docs/img/status-page.png

clean:
	rm -rf bin
