// Package harness tests the C++ binding (bindings/cpp/metricq.hpp): it builds
// tests/cpp/test_metricq.cpp against include/, bindings/cpp and build/lib
// and runs it against a local manager on the test broker (tests/harness),
// checking what the sink received. Run it with
// scripts/with-vhost.sh make -f mk/bindings.mk cpp-test.
package harness

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/tests/harness"
)

// cxxFlags: strict, so that the header stays clean in users' builds.
var cxxFlags = []string{"-O0", "-g", "-Wall", "-Wextra", "-Wpedantic", "-Wshadow", "-Wconversion", "-Wsign-conversion",
	"-Wold-style-cast", "-Wnon-virtual-dtor", "-Werror", "-pthread"}

func cxx() string {
	if c := os.Getenv("CXX"); c != "" {
		return c
	}
	return "c++"
}

func TestCpp(t *testing.T) {
	root, build := harness.Root(t), harness.BuildLib(t)
	testenv.URL(t)
	dir := t.TempDir()
	exe := filepath.Join(dir, "test_metricq")
	src := filepath.Join(root, "tests", "cpp", "test_metricq.cpp")
	inc := []string{"-I" + filepath.Join(root, "include"), "-I" + filepath.Join(root, "bindings", "cpp")}

	// C++17 builds the program; C++20 (std::span overloads) is compiled
	// alongside, without linking.
	var wg sync.WaitGroup
	wg.Add(1)
	var err20 error
	go func() {
		defer wg.Done()
		args := append(append(append([]string{"-std=c++20", "-fsyntax-only"}, cxxFlags...), inc...), src)
		_, err20 = harness.RunErr(dir, nil, cxx(), args...)
	}()
	args := append(append(append([]string{"-std=c++17", "-o", exe}, cxxFlags...), inc...), src)
	harness.Run(t, dir, nil, cxx(), append(args, harness.LinkFlags(build)...)...)
	wg.Wait()
	if err20 != nil {
		t.Fatal(err20)
	}

	env := harness.Start(t, map[string]map[string]any{
		"cpptest-main":   {"answer": 42},
		"cpptest-config": {"rate": 5},
	})
	env.RunProgram(t, 3*time.Minute, "cpptest.", []string{"METRICQ_TEST_REFUSED_URL=" + harness.RefusedURL(t)}, exe)
}
