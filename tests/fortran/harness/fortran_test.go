// Package harness tests the Fortran binding (module metricq,
// bindings/fortran/metricq.f90): it builds the module (mk/bindings.mk
// fortran-lib) and tests/fortran/test_metricq.f90 against it and
// build/lib, and runs the program against a local manager on the test
// broker (tests/harness), checking what the sink received. Run it with
// scripts/with-vhost.sh make -f mk/bindings.mk fortran-test.
package harness

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/tests/harness"
)

func fc() string {
	if c := os.Getenv("FC"); c != "" && c != "f77" {
		return c
	}
	return "gfortran"
}

func TestFortran(t *testing.T) {
	root, build := harness.Root(t), harness.BuildFortran(t)
	testenv.URL(t)
	dir := t.TempDir()
	exe := filepath.Join(dir, "test_metricq")
	args := []string{"-std=f2018", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-fcheck=all",
		"-I" + filepath.Join(build, "fortran"), "-J" + dir, "-o", exe,
		filepath.Join(root, "tests", "fortran", "test_metricq.f90"),
		filepath.Join(build, "fortran", "libmetricq_fortran.a")}
	harness.Run(t, dir, nil, fc(), append(args, harness.LinkFlags(build)...)...)

	env := harness.Start(t, map[string]map[string]any{
		"ftest-main":   {"answer": 42},
		"ftest-config": {"rate": 5},
	})
	env.RunProgram(t, 2*time.Minute, "ftest.", []string{"METRICQ_TEST_REFUSED_URL=" + harness.RefusedURL(t)}, exe)
}
