# libmetricq: `make` builds, `make test` runs every test against a real
# RabbitMQ, `make demo` shows it working; `make help` lists the targets.
# Every tool they use is ensured first (mk/ensure.mk, scripts/ensure-tools.sh):
# installed from Debian's packages when run as root, otherwise named in one
# message with the command to run.
SHELL := bash
GO ?= go
PROTOC_GEN_GO_VERSION := v1.36.12
TOOLS := $(CURDIR)/.tools/bin
VENV := $(CURDIR)/.venv
TEST_TIMEOUT ?= 15m

.PHONY: all help build test test-go vet proto broker venv clean

all: build

help:
	@echo 'make            build the C library and every Go package'
	@echo 'make demo       local broker + manager, the example sources of every language, live view'
	@echo 'make test       every test against a real RabbitMQ (vet, C, C++, Fortran, Python, Go, demo)'
	@echo 'make bench      the benchmarks; writes BENCHMARKS.md and bench/throughput.png'
	@echo 'make install    the C library, header, C++/Fortran bindings, CMake and pkg-config files (PREFIX)'
	@echo 'make examples-c examples-cpp examples-fortran   the examples, in build/examples/'
	@echo 'make python     the Python binding with its bundled library and C extension'
	@echo 'make vet        go vet, gofmt and go mod tidy'
	@echo 'make soak       a long run with forced reconnects (SOAK_DURATION)'
	@echo 'make clean      remove build output'

# The C library (lib, install, examples-c, check-symbols, test-c), and with
# it mk/ensure.mk: ensure-NAME for every tool of scripts/ensure-tools.sh.
include mk/capi.mk

build: lib | ensure-cc
	$(GO) build ./...

# C++, Fortran, CMake package (fortran-lib, install-bindings, examples-cpp,
# examples-fortran, cpp-test, fortran-test, test-install, test-bindings).
include mk/bindings.mk
install: install-bindings
# make bench: the benchmark suite, writing BENCHMARKS.md and bench/throughput.png.
include mk/bench.mk

vet: | ensure-cc
	$(GO) vet ./...
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

broker: ensure-broker
venv: ensure-venv

# Every test, against one throw-away vhost per run. ensure-test comes first,
# so that all that is missing is installed at once, or named in one message.
TEST_TOOLS := cc gfortran g++ cmake pkg-config chromium venv broker
.PHONY: ensure-test
ensure-test:
	@scripts/ensure-tools.sh $(TEST_TOOLS)

test: ensure-test vet lib check-symbols examples-c fortran-lib python
	scripts/with-vhost.sh $(MAKE) --no-print-directory test-go test-python-run

# Go tests, including the interoperability tests that run the reference
# Python metricq from .venv; needs METRICQ_TEST_URL (see scripts/with-vhost.sh).
# The scale tests (100,000 metrics) run without -race: see
# libmetricq/scale_test.go.
test-go: fuzz | $(addprefix ensure-,$(TEST_TOOLS))
	LIBMETRICQ_BUILD=$(CURDIR)/$(CAPI_BUILD) METRICQ_PYTHON=$(VENV)/bin/python $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -run '^TestScale' ./libmetricq

# The fuzz targets of the Go core, FUZZ_TIME inputs each (plain `go test` runs
# their committed seed corpora, libmetricq/testdata/fuzz/, as unit tests).
FUZZ_TARGETS := FuzzIncomingRPC FuzzParseTimedelta FuzzValidateMetricName FuzzDataChunk
# A count rather than a duration: with -fuzztime Ns, go test sometimes fails
# a healthy run with "context deadline exceeded" when the time runs out
# while a worker is busy (seen on this 2-core machine under load).
FUZZ_TIME ?= 20000x
.PHONY: fuzz soak
fuzz: | ensure-cc
	@for f in $(FUZZ_TARGETS); do \
		echo "fuzz $$f: $(FUZZ_TIME) inputs"; \
		$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZ_TIME) ./libmetricq/ || exit 1; \
	done

# A Source streaming at a steady rate for SOAK_DURATION while its
# connections are force-closed every 15 s; prints points accepted,
# received, lost, duplicated and the peak memory (tests/soak).
SOAK_DURATION ?= 10m
soak: | ensure-broker ensure-cc
	scripts/with-vhost.sh $(GO) run ./tests/soak -duration $(SOAK_DURATION)

# The Python binding (ctypes) with libmetricq.so bundled, so that
# `pip install bindings/python` carries it, and its optional C extension
# libmetricq._fastsend (a cheaper send) built in place, by the Python of the
# virtualenv (an extension fits one CPython version; ensure-venv also ensures
# its headers). If it does not compile, setup.py only warns; test-python-run
# expects it and fails.
PY_LIBDIR := bindings/python/libmetricq/_lib
.PHONY: python test-python test-python-run
python: lib | ensure-venv ensure-cc
	install -d $(PY_LIBDIR)
	install -m 0755 $(CAPI_LIB) $(PY_LIBDIR)/libmetricq.so.$(CAPI_MAJOR)
	cd bindings/python && $(VENV)/bin/python setup.py -q build_ext --inplace \
		--build-lib $(CURDIR)/$(CAPI_BUILD)/python --build-temp $(CURDIR)/$(CAPI_BUILD)/python/temp

test-python: python | ensure-broker
	scripts/with-vhost.sh $(MAKE) --no-print-directory test-python-run

test-python-run: | ensure-venv
	LIBMETRICQ_EXPECT_FASTSEND=1 $(VENV)/bin/python -m pytest -q bindings/python/tests

# Regenerates libmetricq/pb/datachunk.pb.go from its .proto.
proto: | ensure-protoc
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	PATH=$(TOOLS):$$PATH protoc --go_out=. --go_opt=module=github.com/libmetricq/libmetricq libmetricq/pb/datachunk.proto

clean:
	rm -rf build .tools $(PY_LIBDIR) bindings/python/libmetricq/_fastsend.*.so

# The main job in one command: RabbitMQ (installed when missing and run as
# root), the local manager, the example sources of every language and a live
# view of what arrives, in the terminal and at http://127.0.0.1:8080/, for
# DEMO_SECONDS (default 20) or until Ctrl-C; then points sent vs received per
# metric. See scripts/demo.sh for the other DEMO_* settings.
.PHONY: demo test-demo
demo:
	scripts/demo.sh

# The demo for a few seconds and the browser view in headless Chromium (also
# part of test-go); the screenshot lands in build/test-artifacts/watch.png.
test-demo: | ensure-broker ensure-chromium
	scripts/with-vhost.sh $(GO) test -race -count=1 -run 'TestDemo|TestWatchBrowser' ./cmd/metricq-manager
