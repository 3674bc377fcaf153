# libmetricq's C++, Fortran and CMake bindings. Standalone
# (make -f mk/bindings.mk TARGET, which includes mk/capi.mk) or included by
# the top-level Makefile after mk/capi.mk. Run from the repository root.
#
#   fortran-lib       $(CAPI_BUILD)/fortran/: metricq.mod and
#                     libmetricq_fortran.a (the module's object), built with
#                     $(FC) from bindings/fortran/metricq.f90
#   install-bindings  PREFIX=/usr/local (and DESTDIR, LIBDIR, INCLUDEDIR):
#                     include/metricq.hpp; include/metricq.mod,
#                     lib/libmetricq_fortran.a and the module source in
#                     share/libmetricq/fortran/; the CMake package in
#                     lib/cmake/libmetricq/; lib/pkgconfig/libmetricq-fortran.pc.
#                     (The C library itself: mk/capi.mk install.)
#   examples-cpp      $(CAPI_BUILD)/examples/cpp/*, linked to $(CAPI_BUILD)/lib
#   examples-fortran  $(CAPI_BUILD)/examples/fortran/*
#   cpp-test          tests/cpp against a real broker and a local manager
#   fortran-test      tests/fortran, likewise
#   test-install      tests/install: install to a temporary prefix, build
#                     examples/{c,cpp,fortran} with CMake and pkg-config,
#                     run them against the broker
#   test-bindings     the three tests above, in one go test run
#
# The tests need METRICQ_TEST_URL, e.g.
#   scripts/with-vhost.sh make -f mk/bindings.mk cpp-test

# Standalone (make -f mk/bindings.mk) builds the Fortran module by default;
# included, the including Makefile keeps its own default goal.
ifndef CAPI_LIB
include mk/capi.mk
.DEFAULT_GOAL := fortran-lib
endif

# make's built-in FC is f77: use gfortran unless FC was set.
ifeq ($(origin FC),default)
FC := gfortran
endif
CXX_BINDINGS ?= c++
BINDINGS_FFLAGS ?= -O2 -g -fPIC -std=f2018 -Wall -Wextra -Werror
BINDINGS_CXXFLAGS ?= -std=c++17 -O2 -g -Wall -Wextra -Wpedantic -Werror -pthread
DATADIR ?= $(PREFIX)/share
CMAKEDIR ?= $(LIBDIR)/cmake/libmetricq

BND_FORTRAN := $(CAPI_BUILD)/fortran
BND_FORTRAN_LIB := $(BND_FORTRAN)/libmetricq_fortran.a
BND_FORTRAN_MOD := $(BND_FORTRAN)/metricq.mod
BND_CPP_EXAMPLES := $(patsubst examples/cpp/%.cpp,$(CAPI_BUILD)/examples/cpp/%,$(wildcard examples/cpp/*.cpp))
BND_FORTRAN_EXAMPLES := $(patsubst examples/fortran/%.f90,$(CAPI_BUILD)/examples/fortran/%,$(wildcard examples/fortran/*.f90))
BND_RPATH := -Wl,-rpath,'$$ORIGIN/../../lib'
BND_GOTEST = $(GO) test -count=1 -timeout 5m $(if $(V),-v)

.PHONY: fortran-lib install-bindings examples-cpp examples-fortran cpp-test fortran-test test-install test-bindings

fortran-lib: $(BND_FORTRAN_LIB)

# The module file comes with the object.
$(BND_FORTRAN_MOD): $(BND_FORTRAN_LIB)

$(BND_FORTRAN_LIB): bindings/fortran/metricq.f90 | ensure-gfortran ensure-cc
	@mkdir -p $(BND_FORTRAN)
	$(FC) $(BINDINGS_FFLAGS) -J$(BND_FORTRAN) -c $< -o $(BND_FORTRAN)/metricq.o
	rm -f $@
	ar rcs $@ $(BND_FORTRAN)/metricq.o

# The relative paths let the CMake package and the pkg-config file for
# Fortran find the prefix from where they are installed (DESTDIR staging and
# moved prefixes work); LIBDIR and INCLUDEDIR outside PREFIX stay absolute.
BND_CMAKE_TO_PREFIX = $(shell realpath -m --relative-to=$(CMAKEDIR) $(PREFIX))
BND_REL = $(if $(filter $(abspath $(PREFIX))/%,$(abspath $(1))),$(patsubst $(abspath $(PREFIX))/%,%,$(abspath $(1))),$(abspath $(1)))

install-bindings: fortran-lib
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(CMAKEDIR) \
		$(DESTDIR)$(DATADIR)/libmetricq/fortran $(DESTDIR)$(PKGCONFIGDIR)
	install -m 0644 bindings/cpp/metricq.hpp $(DESTDIR)$(INCLUDEDIR)/metricq.hpp
	install -m 0644 $(BND_FORTRAN_MOD) $(DESTDIR)$(INCLUDEDIR)/metricq.mod
	install -m 0644 $(BND_FORTRAN_LIB) $(DESTDIR)$(LIBDIR)/libmetricq_fortran.a
	install -m 0644 bindings/fortran/metricq.f90 $(DESTDIR)$(DATADIR)/libmetricq/fortran/metricq.f90
	sed -e 's|@PREFIX_FROM_CMAKEDIR@|$(BND_CMAKE_TO_PREFIX)|g' \
		-e 's|@LIBDIR@|$(call BND_REL,$(LIBDIR))|g' \
		-e 's|@INCLUDEDIR@|$(call BND_REL,$(INCLUDEDIR))|g' -e 's|@DATADIR@|$(call BND_REL,$(DATADIR))|g' \
		-e 's|@VERSION@|$(CAPI_VERSION)|g' -e 's|@SONAME@|$(CAPI_SONAME)|g' \
		-e 's|@REAL@|$(CAPI_REAL)|g' \
		-e 's|@FORTRAN_COMPILER@|$(shell $(FC) -dumpfullversion 2>/dev/null || $(FC) -dumpversion)|g' \
		cmake/libmetricqConfig.cmake.in > $(DESTDIR)$(CMAKEDIR)/libmetricqConfig.cmake
	sed -e 's|@VERSION@|$(CAPI_VERSION)|g' cmake/libmetricqConfigVersion.cmake.in \
		> $(DESTDIR)$(CMAKEDIR)/libmetricqConfigVersion.cmake
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
		-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(CAPI_VERSION)|g' \
		cmake/libmetricq-fortran.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/libmetricq-fortran.pc
	chmod 0644 $(DESTDIR)$(CMAKEDIR)/*.cmake $(DESTDIR)$(PKGCONFIGDIR)/libmetricq-fortran.pc

examples-cpp: $(BND_CPP_EXAMPLES)

$(CAPI_BUILD)/examples/cpp/%: examples/cpp/%.cpp bindings/cpp/metricq.hpp include/metricq.h $(CAPI_BUILD)/lib/libmetricq.so | ensure-g++
	@mkdir -p $(dir $@)
	$(CXX_BINDINGS) $(BINDINGS_CXXFLAGS) -Iinclude -Ibindings/cpp -o $@ $< -L$(CAPI_BUILD)/lib -lmetricq $(BND_RPATH)

examples-fortran: $(BND_FORTRAN_EXAMPLES)

$(CAPI_BUILD)/examples/fortran/%: examples/fortran/%.f90 $(BND_FORTRAN_LIB) $(CAPI_BUILD)/lib/libmetricq.so | ensure-gfortran
	@mkdir -p $(dir $@)
	$(FC) -O2 -g -I$(BND_FORTRAN) -J$(dir $@) -o $@ $< $(BND_FORTRAN_LIB) -L$(CAPI_BUILD)/lib -lmetricq $(BND_RPATH)

# The Go harnesses build and run the test programs; they find the library
# in LIBMETRICQ_BUILD.
BND_TESTENV = LIBMETRICQ_BUILD=$(abspath $(CAPI_BUILD)) FC=$(FC)

cpp-test: lib | ensure-g++
	$(BND_TESTENV) $(BND_GOTEST) ./tests/cpp/harness

fortran-test: lib fortran-lib | ensure-gfortran
	$(BND_TESTENV) $(BND_GOTEST) ./tests/fortran/harness

BND_INSTALL_TOOLS := ensure-cc ensure-g++ ensure-gfortran ensure-cmake ensure-pkg-config ensure-venv

test-install: lib fortran-lib | $(BND_INSTALL_TOOLS)
	$(BND_TESTENV) $(BND_GOTEST) ./tests/install

test-bindings: lib fortran-lib | $(BND_INSTALL_TOOLS)
	$(BND_TESTENV) $(BND_GOTEST) ./tests/cpp/harness ./tests/fortran/harness ./tests/install
