// Package ctest runs libmetricq's C tests (tests/c) and checks the C
// library's build: it starts a local MetricQ manager and a sink on the test
// broker, compiles and runs the C test program against build/lib, answers
// its requests (config pushes, discover) and checks that the sink received
// exactly the points the program says it had accepted, in order and chunked
// as configured. It also checks the header (C and C++), that the exported
// symbols match include/metricq.h, the SONAME, make install with
// pkg-config, and the C examples; and the C registry alone under
// ThreadSanitizer and AddressSanitizer (tests/c/test_registry.c).
//
// Run it with make -f mk/capi.mk test-c (which builds the library first
// and sets LIBMETRICQ_BUILD), or with go test, which builds the library
// through make when LIBMETRICQ_BUILD is unset. The broker tests need
// METRICQ_TEST_URL (scripts/with-vhost.sh sets it) and follow
// internal/testenv's locking, so they can run beside the other packages'
// tests. It lives beside the package whose build it checks, as Go tests
// do; tests/c holds only the C programs it compiles and runs.
package ctest
