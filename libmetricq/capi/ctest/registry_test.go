package ctest

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/libmetricq/libmetricq/tests/harness"
)

// TestRegistry runs tests/c/test_registry.c, which drives the C registry
// (registry.c) alone from many threads, once under ThreadSanitizer (a data
// race fails it, the lock-free reads of the expected stage included) and
// once under AddressSanitizer and UBSan (a stage read after its source was
// destroyed fails it).
func TestRegistry(t *testing.T) {
	root := harness.Root(t)
	for _, sanitizer := range []string{"thread", "address,undefined"} {
		t.Run(sanitizer, func(t *testing.T) {
			exe := filepath.Join(t.TempDir(), "test_registry")
			harness.Run(t, root, nil, "cc", "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-pthread",
				"-fsanitize="+sanitizer, "-fno-sanitize-recover=all",
				"-I"+filepath.Join(root, "include"), "-I"+filepath.Join(root, "libmetricq", "capi"), "-o", exe,
				filepath.Join(root, "tests", "c", "test_registry.c"), filepath.Join(root, "libmetricq", "capi", "registry.c"))
			// A sanitizer report fails the run (exit status 66 or 1).
			out := harness.Run(t, root, nil, exe)
			if !strings.Contains(out, "registry: all checks passed") {
				t.Fatalf("test_registry: %s", out)
			}
		})
	}
}
