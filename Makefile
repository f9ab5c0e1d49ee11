# Crane — the verbs people type. `make test` is what CI runs (.ci/run calls it).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: test deps fmt-check clippy unit test-cluster bench bench-engine crds \
        cluster-up cluster-down env build up down demo bench-operator bench-server

## test: everything CI runs — formatting, lints, unit + Redis + control-plane tests
test: deps fmt-check clippy unit test-cluster

## deps: install what the tests need when missing: Redis and Lua (the Argo CD health test)
## from Debian, PostgreSQL (the run archive's tests) and Chromium + npm (crane-server's browser
## test), PyYAML (the chart hardening check), the Go-built control plane and helm
deps:
	@missing=""; command -v redis-server >/dev/null || missing+=" redis-server"; \
	 command -v lua5.4 >/dev/null || missing+=" lua5.4"; \
	 ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=" postgresql"; \
	 command -v chromium >/dev/null || missing+=" chromium"; \
	 command -v npm >/dev/null || missing+=" npm"; \
	 if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	@python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml
	@e2e/cluster/build.sh >/dev/null

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

## cluster-up / cluster-down: the bare local control plane (etcd, kube-apiserver,
## kube-controller-manager, process kubelet) and a Redis, in the background
cluster-up: build
	e2e/cluster/up.sh

cluster-down:
	e2e/cluster/down.sh

## up: the local control plane plus Crane installed with the Helm chart (CRDs, operator,
## default WorkerPool), in the background; returns when the operator is ready
up: deps build
	e2e/up.sh

## down: helm uninstall and cluster-down; nothing is left running
down:
	e2e/down.sh

## demo: make up, apply config/samples/, follow the runs to the end, print their results
demo: deps build
	e2e/demo.sh

## env: `eval "$(make -s env)"` points kubectl, helm and REDIS_URL at the local cluster
env:
	@e2e/cluster/env.sh
