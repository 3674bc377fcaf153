# libmetricq's C shared library. Standalone (make -f mk/capi.mk TARGET) or
# included by the top-level Makefile. Run from the repository root.
#
#   lib           build/lib/libmetricq.so.$(CAPI_VERSION) with SONAME
#                 libmetricq.so.$(CAPI_MAJOR), only mq_* symbols exported,
#                 and the symlinks libmetricq.so.$(CAPI_MAJOR), libmetricq.so
#   install       PREFIX=/usr/local (and DESTDIR): the library and its
#                 symlinks, include/metricq.h, lib/pkgconfig/libmetricq.pc
#   examples-c    build/examples/c/*: the C examples, linked to build/lib
#   check-symbols fail unless the library exports exactly mq_* symbols and
#                 carries its SONAME
#   test-c        the C tests (tests/c, run by libmetricq/capi/ctest) against
#                 a real broker and a local manager; needs METRICQ_TEST_URL, e.g.
#                 scripts/with-vhost.sh make -f mk/capi.mk test-c
#
# cgo's generated header (build/cgo/libmetricq.h) is a build artefact used
# by the tests to check the exports against include/metricq.h; it is never
# installed.

GO ?= go
CC ?= cc
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig

CAPI_VERSION := $(shell sed -n 's/^const Version = "\(.*\)"/\1/p' libmetricq/doc.go)
CAPI_MAJOR := $(firstword $(subst ., ,$(CAPI_VERSION)))
CAPI_REAL := libmetricq.so.$(CAPI_VERSION)
CAPI_SONAME := libmetricq.so.$(CAPI_MAJOR)
CAPI_BUILD := build
CAPI_LIB := $(CAPI_BUILD)/lib/$(CAPI_REAL)
CAPI_MAP := $(CURDIR)/libmetricq/capi/libmetricq.map
CAPI_SOURCES := $(shell find libmetricq internal/amqpkit -name '*.go' ! -name '*_test.go') \
	$(wildcard libmetricq/capi/*.c libmetricq/capi/*.h) include/metricq.h $(CAPI_MAP) go.mod go.sum
CAPI_CFLAGS ?= -std=c11 -O2 -g -Wall -Wextra -Werror -pthread
CAPI_EXAMPLES := $(patsubst examples/c/%.c,$(CAPI_BUILD)/examples/c/%,$(wildcard examples/c/*.c))

.PHONY: lib install examples-c check-symbols test-c

lib: $(CAPI_BUILD)/lib/libmetricq.so

# Go names the generated header after the output file, so build under
# build/cgo and move the library into place.
$(CAPI_LIB): $(CAPI_SOURCES) | ensure-cc
	@mkdir -p $(CAPI_BUILD)/cgo $(CAPI_BUILD)/lib
	$(GO) build -buildmode=c-shared -trimpath -o $(CAPI_BUILD)/cgo/libmetricq.so \
		-ldflags "-extldflags '-Wl,-soname,$(CAPI_SONAME) -Wl,--version-script=$(CAPI_MAP)'" \
		./libmetricq/capi
	mv -f $(CAPI_BUILD)/cgo/libmetricq.so $@

$(CAPI_BUILD)/lib/libmetricq.so: $(CAPI_LIB)
	ln -sf $(CAPI_REAL) $(CAPI_BUILD)/lib/$(CAPI_SONAME)
	ln -sf $(CAPI_SONAME) $@

check-symbols: lib | ensure-cc
	@extra=$$(nm -D --defined-only $(CAPI_LIB) | awk '$$3 !~ /^mq_/'); \
	if [ -n "$$extra" ]; then echo "exported symbols other than mq_*:"; echo "$$extra"; exit 1; fi
	@readelf -d $(CAPI_LIB) | grep -q "SONAME.*\[$(CAPI_SONAME)\]" || { echo "SONAME is not $(CAPI_SONAME)"; exit 1; }
	@echo "symbols: only mq_* exported; SONAME $(CAPI_SONAME)"

install: lib
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 0755 $(CAPI_LIB) $(DESTDIR)$(LIBDIR)/$(CAPI_REAL)
	ln -sf $(CAPI_REAL) $(DESTDIR)$(LIBDIR)/$(CAPI_SONAME)
	ln -sf $(CAPI_SONAME) $(DESTDIR)$(LIBDIR)/libmetricq.so
	install -m 0644 include/metricq.h $(DESTDIR)$(INCLUDEDIR)/metricq.h
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
		-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(CAPI_VERSION)|g' \
		libmetricq/capi/libmetricq.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/libmetricq.pc
	chmod 0644 $(DESTDIR)$(PKGCONFIGDIR)/libmetricq.pc

examples-c: $(CAPI_EXAMPLES)

$(CAPI_BUILD)/examples/c/%: examples/c/%.c include/metricq.h $(CAPI_BUILD)/lib/libmetricq.so | ensure-cc
	@mkdir -p $(dir $@)
	$(CC) $(CAPI_CFLAGS) -Iinclude -o $@ $< -L$(CAPI_BUILD)/lib -lmetricq -Wl,-rpath,'$$ORIGIN/../../lib' -lm

# The harness (libmetricq/capi/ctest) starts a local manager and a sink,
# compiles and runs tests/c against build/lib, and checks what the sink
# received; also the header, exported symbols, install and the examples.
test-c: lib check-symbols | ensure-cc ensure-g++ ensure-pkg-config
	LIBMETRICQ_BUILD=$(CURDIR)/$(CAPI_BUILD) $(GO) test -count=1 -timeout 10m ./libmetricq/capi/ctest $(if $(V),-v)

# The ensure-NAME targets, after this file's own so that its first target
# stays the default goal.
ifndef ENSURE_STEPS
include mk/ensure.mk
endif
