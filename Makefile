# Crane — the verbs people type. `make test` is what CI runs (.ci/run calls it).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: test deps fmt-check clippy unit test-cluster bench bench-engine crds \
        cluster-up cluster-down env build up down demo bench-operator bench-server

## test: everything CI runs — formatting, lints, unit + Redis + control-plane tests
test: deps fmt-check clippy unit test-cluster

## deps: install what the tests need when missing (e2e/deps.sh): Debian packages (Redis, Lua,
## Prometheus with promtool for the telemetry suite, tmux for the kubectl crane watch test,
## PostgreSQL for the run archive's tests, Chromium and npm for crane-server's browser test,
## containerd, runc, CNI plugins, podman, mmdebstrap, iptables), PyYAML, the Go-built cluster
## (control plane, kubelet, kube-proxy, CoreDNS, helm), the node's images and the
## OpenTelemetry Collector (built from Go modules)
deps:
	@e2e/deps.sh
	@e2e/servers/otelcol.sh >/dev/null

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

build:
	$(CARGO) build --workspace --locked

unit: build
	$(CARGO) test --workspace --locked

## test-cluster: every suite that needs the local control plane (brings a cluster up and down)
test-cluster: build
	e2e/run.sh

## crds: regenerate the CRD YAML from the API types (crds/, config/crd/bases/, charts/crane/crds/)
crds:
	$(CARGO) run --locked -q -p crane-api --bin crdgen

## bench: every benchmark (engine, then the operator on a private cluster), printing figures;
## ends with one JSON line {"engine": ..., "operator": ...}
bench: deps
	e2e/bench/all.sh

## bench-operator: the operator's benchmark alone (private cluster under /tmp, ~2.5 min)
bench-operator: deps
	e2e/bench/operator.sh

## bench-server: crane-server's benchmark alone (private cluster and PostgreSQL under /tmp):
## archive write cost, list latency over 10,000 archived runs, SSE event latency
bench-server: deps
	e2e/bench/server.sh

## bench-engine: the Redis engine's throughput and latency; ends with one JSON line
bench-engine: deps
	$(CARGO) run --release --locked -p crane-engine --example bench_engine

## cluster-up / cluster-down: the bare local cluster (etcd, kube-apiserver,
## kube-controller-manager, kube-scheduler, one node: containerd, kubelet, kube-proxy; CoreDNS)
## and a Redis, in the background
cluster-up: deps build
	e2e/cluster/up.sh

cluster-down:
	e2e/cluster/down.sh

## up: the local cluster plus Crane installed with the Helm chart (CRDs, operator, bundled
## Redis, default WorkerPool) from the image of this work tree, in the background; returns when
## the operator is ready
up: deps build
	e2e/up.sh

## down: stop the local cluster and Crane; nothing is left running
down:
	e2e/cluster/down.sh

## demo: make up, apply config/samples/, follow the runs to the end, print their results
demo: deps build
	e2e/demo.sh

## env: `eval "$(make -s env)"` points kubectl, helm and REDIS_URL at the local cluster (and
## gives CRANE_HOST_IP, the host as pods reach it, and CRANE_IMAGE)
env:
	@e2e/cluster/env.sh
