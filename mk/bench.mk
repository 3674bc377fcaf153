# libmetricq's benchmark suite. Included by the top-level Makefile (after
# mk/capi.mk, whose lib target and CAPI_* variables it uses); run from the
# repository root.
#
#   bench   builds the C library, the Python binding's C extension (make
#           python) and the C driver (build/bench/mqbench),
#           ensures RabbitMQ, gnuplot and the virtualenv, then runs
#           bench/cmd/bench against a fresh vhost: every scenario
#           BENCH_RUNS times (default 5), the go test benchmarks with
#           -benchmem and a CPU profile, perf on the C send path. Writes
#           BENCHMARKS.md, bench/throughput.png, bench/scaling.png and
#           build/bench/*.
#           Quick look: BENCH_RUNS=1 BENCH_SECONDS=0.5 make bench
#           Some scenarios only: BENCH_ONLY='c-send|raw' make bench

BENCH_BUILD := $(CAPI_BUILD)/bench
BENCH_CFLAGS ?= -std=c11 -O2 -g -Wall -Wextra -Werror -pthread

.PHONY: bench bench-build

bench: bench-build | ensure-broker ensure-gnuplot ensure-venv
	scripts/with-vhost.sh $(GO) run ./bench/cmd/bench

bench-build: lib python $(BENCH_BUILD)/mqbench

$(BENCH_BUILD)/mqbench: bench/c/mqbench.c include/metricq.h $(CAPI_BUILD)/lib/libmetricq.so | ensure-cc
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) -Iinclude -o $@ $< -L$(CAPI_BUILD)/lib -lmetricq -Wl,-rpath,'$$ORIGIN/../lib'
