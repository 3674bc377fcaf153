// Package install tests libmetricq as users get it: make install into a
// temporary prefix (mk/capi.mk install and mk/bindings.mk
// install-bindings), then examples/{c,cpp,fortran} built with CMake
// (find_package(libmetricq CONFIG)) and with pkg-config, and run against a
// local manager on the test broker. Run it with
// scripts/with-vhost.sh make -f mk/bindings.mk test-install.
package install

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
	"github.com/libmetricq/libmetricq/tests/harness"
)

func tool(env, fallback string) string {
	if c := os.Getenv(env); c != "" && !(env == "FC" && c == "f77") {
		return c
	}
	return fallback
}

// install installs into prefix (with DESTDIR when stage is set) and
// returns where the files are.
func install(t *testing.T, prefix, stage string) string {
	t.Helper()
	args := []string{"install", "install-bindings", "PREFIX=" + prefix}
	if stage != "" {
		args = append(args, "DESTDIR="+stage)
	}
	harness.Run(t, harness.Root(t), nil, "make", append(append([]string{"--no-print-directory", "-s", "-f", "mk/bindings.mk"}, args...), harness.MakeVars()...)...)
	return stage + prefix
}

func TestInstall(t *testing.T) {
	root := harness.Root(t)
	harness.BuildFortran(t)
	testenv.URL(t)
	tmp := t.TempDir()
	prefix := filepath.Join(tmp, "prefix")
	install(t, prefix, "")

	v := libmetricq.Version
	for _, f := range []string{
		"lib/libmetricq.so." + v, "lib/libmetricq.so.0", "lib/libmetricq.so", "include/metricq.h",
		"include/metricq.hpp", "include/metricq.mod", "lib/libmetricq_fortran.a",
		"share/libmetricq/fortran/metricq.f90", "lib/pkgconfig/libmetricq.pc", "lib/pkgconfig/libmetricq-fortran.pc",
		"lib/cmake/libmetricq/libmetricqConfig.cmake", "lib/cmake/libmetricq/libmetricqConfigVersion.cmake",
	} {
		if _, err := os.Stat(filepath.Join(prefix, f)); err != nil {
			t.Errorf("not installed: %s", f)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Build every example with CMake, and with pkg-config, two at a time.
	bin := map[string]string{} // name -> executable
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	slots := make(chan struct{}, 2)
	job := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			if err := f(); err != nil {
				errs <- err
			}
		}()
	}
	for _, lang := range []string{"c", "cpp", "fortran"} {
		job(func() error {
			build := filepath.Join(tmp, "build-"+lang)
			_, err := harness.RunErr(root, nil, "cmake", "-S", filepath.Join(root, "examples", lang), "-B", build,
				"-DCMAKE_PREFIX_PATH="+prefix, "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_Fortran_COMPILER="+tool("FC", "gfortran"))
			if err == nil {
				_, err = harness.RunErr(root, nil, "cmake", "--build", build)
			}
			mu.Lock()
			defer mu.Unlock()
			switch lang {
			case "c":
				bin["cmake-c-minimal"] = filepath.Join(build, "minimal_source")
				bin["cmake-c-interval"] = filepath.Join(build, "interval_source")
				bin["cmake-c-batch"] = filepath.Join(build, "batch_source")
			case "cpp":
				bin["cmake-cpp"] = filepath.Join(build, "sensor_source")
			case "fortran":
				bin["cmake-fortran"] = filepath.Join(build, "heat_simulation")
			}
			return err
		})
	}
	pc := []string{"PKG_CONFIG_PATH=" + filepath.Join(prefix, "lib", "pkgconfig")}
	rpath := "-Wl,-rpath," + filepath.Join(prefix, "lib")
	pkgBuild := func(name, pkg, compiler string, flags []string, src string) {
		job(func() error {
			out, err := harness.RunErr(root, pc, "pkg-config", "--cflags", "--libs", pkg)
			if err != nil {
				return err
			}
			exe := filepath.Join(tmp, "pc-"+name)
			args := append(append(append(append([]string{}, flags...), "-o", exe, filepath.Join(root, src)), strings.Fields(out)...), rpath)
			if _, err := harness.RunErr(tmp, nil, compiler, args...); err != nil {
				return err
			}
			mu.Lock()
			bin["pc-"+name] = exe
			mu.Unlock()
			return nil
		})
	}
	pkgBuild("c-minimal", "libmetricq", tool("CC", "cc"), []string{"-std=c11", "-Wall", "-Werror"}, "examples/c/minimal_source.c")
	pkgBuild("cpp", "libmetricq", tool("CXX", "c++"), []string{"-std=c++17", "-pthread", "-Wall", "-Werror"}, "examples/cpp/sensor_source.cpp")
	pkgBuild("fortran", "libmetricq-fortran", tool("FC", "gfortran"), []string{"-J" + tmp}, "examples/fortran/heat_simulation.f90")
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	// The programs load the installed library.
	ldd := harness.Run(t, tmp, nil, "ldd", bin["cmake-cpp"])
	if !strings.Contains(ldd, filepath.Join(prefix, "lib", "libmetricq.so.0")) {
		t.Errorf("the CMake-built C++ example does not load the installed library:\n%s", ldd)
	}

	env := harness.Start(t, map[string]map[string]any{
		"install-c-interval": {"rate": 20, "prefix": "install.c.sysinfo"},
		"install-cmake-cpp":  {"rate": 20},
		"install-pc-cpp":     {"rate": 20},
	})
	runExample := func(name string, args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin[name], append([]string{env.URL}, args...)...)
		out := &harness.LogWriter{T: t, Name: name}
		cmd.Stdout, cmd.Stderr = out, out
		start := time.Now()
		err := cmd.Run()
		out.Flush()
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		t.Logf("%s ran %v", name, time.Since(start).Round(time.Millisecond))
	}
	runExample("cmake-c-minimal", "install-cmake-c", "3")
	runExample("pc-c-minimal", "install-pc-c", "2")
	runExample("cmake-c-interval", "install-c-interval", "3")
	runExample("cmake-c-batch", "install-cmake-c-batch", "0.3")
	runExample("cmake-cpp", "install-cmake-cpp", "0.6")
	runExample("pc-cpp", "install-pc-cpp", "0.3")
	runExample("cmake-fortran", "install-cmake-fortran", "4")
	runExample("pc-fortran", "install-pc-fortran", "2")

	// What arrived: exact counts where the examples are deterministic.
	exact := map[string]int{
		"example.c.minimal.counter":       3 + 2,
		"install.c.sysinfo.load1":         3,
		"example.fortran.heat.total":      4 + 2,
		"example.fortran.heat.max":        4 + 2,
		"example.fortran.heat.probe":      (4 + 2) * 25,
		"example.c.batch.oscillator":      2000,
		"example.cpp.sensor.temperature":  1,
		"example.cpp.sensor.vibration":    100,
		"example.cpp.sensor.pressure":     1,
		"example.cpp.sensor.humidity":     1,
		"install.c.sysinfo.mem_available": 3,
	}
	env.Sink.WaitFor(exact, 20*time.Second, 300*time.Millisecond)
	atLeast := map[string]bool{"example.c.batch.oscillator": true, "example.cpp.sensor.temperature": true, "example.cpp.sensor.vibration": true,
		"example.cpp.sensor.pressure": true, "example.cpp.sensor.humidity": true}
	for metric, n := range exact {
		got := env.Sink.Count(metric)
		if atLeast[metric] && got < n || !atLeast[metric] && got != n {
			t.Errorf("%s: %d points received, want %s%d", metric, got, map[bool]string{true: ">= "}[atLeast[metric]], n)
		}
	}
	if md := env.Manager.Metadata()["example.fortran.heat.probe"]; md["unit"] != "K" {
		t.Errorf("metadata of example.fortran.heat.probe: %v", md)
	}
}

// TestPackageVersion: the CMake package's version rules (SameMinorVersion
// while the major version is 0), from a DESTDIR-staged install (the paths
// in the package are relative).
func TestPackageVersion(t *testing.T) {
	harness.BuildFortran(t)
	tmp := t.TempDir()
	dir := install(t, "/opt/libmetricq-test", filepath.Join(tmp, "stage"))
	project := filepath.Join(tmp, "project")
	if err := os.MkdirAll(project, 0o755); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		request string
		found   bool
	}{
		{"0.1", true}, {"0.1.0 EXACT", true}, {"0", false}, {"0.0", false}, {"0.2", false}, {"1.0", false},
		{"0.1.1", false}, {"0.1...0.3", true}, {"0.2...0.3", false}, {"0.0...0.1", true}, {"0.0...<0.1", false},
	}
	var script strings.Builder
	script.WriteString("cmake_minimum_required(VERSION 3.19)\nproject(versions LANGUAGES NONE)\n")
	for i, c := range checks {
		script.WriteString("unset(libmetricq_DIR CACHE)\nfind_package(libmetricq " + c.request + " CONFIG QUIET)\n")
		id := string(rune('a' + i))
		script.WriteString("if(libmetricq_FOUND)\n  message(STATUS \"check " + id + " 1\")\nelse()\n  message(STATUS \"check " + id + " 0\")\nendif()\n")
	}
	script.WriteString(`find_package(libmetricq 0.1 CONFIG REQUIRED)
foreach(target libmetricq::metricq libmetricq::fortran)
  if(NOT TARGET ${target})
    message(FATAL_ERROR "no target ${target}")
  endif()
  get_target_property(inc ${target} INTERFACE_INCLUDE_DIRECTORIES)
  message(STATUS "${target} include ${inc}")
endforeach()
get_target_property(loc libmetricq::metricq IMPORTED_LOCATION)
message(STATUS "library ${loc}")
if(NOT EXISTS "${libmetricq_FORTRAN_SOURCE}")
  message(FATAL_ERROR "libmetricq_FORTRAN_SOURCE: no ${libmetricq_FORTRAN_SOURCE}")
endif()
`)
	if err := os.WriteFile(filepath.Join(project, "CMakeLists.txt"), []byte(script.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := harness.Run(t, tmp, nil, "cmake", "-S", project, "-B", filepath.Join(tmp, "build"), "-DCMAKE_PREFIX_PATH="+dir)
	for i, c := range checks {
		want := "check " + string(rune('a'+i)) + " " + map[bool]string{true: "1", false: "0"}[c.found]
		if !strings.Contains(out, want) {
			t.Errorf("find_package(libmetricq %s): found should be %v\n", c.request, c.found)
		}
	}
	if want := "library " + filepath.Join(dir, "lib", "libmetricq.so."+libmetricq.Version); !strings.Contains(out, want) {
		t.Errorf("the package does not point into the staged prefix (%s):\n%s", want, out)
	}
	if want := "libmetricq::fortran include " + filepath.Join(dir, "include"); !strings.Contains(out, want) {
		t.Errorf("want %q in\n%s", want, out)
	}
}

// TestInstallPython: the Python package installed with pip (the library
// bundled in it by `make python`, nothing else on the path) runs
// examples/python/batch_source.py, whose points arrive.
func TestInstallPython(t *testing.T) {
	root := harness.Root(t)
	python := os.Getenv("METRICQ_PYTHON")
	if python == "" {
		t.Fatal("METRICQ_PYTHON is not set: `make test` points it at .venv/bin/python (scripts/ensure-tools.sh venv)")
	}
	harness.Make(t, "Makefile", "python")
	site := t.TempDir()
	harness.Run(t, root, nil, python, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps",
		"--target", site, filepath.Join(root, "bindings", "python"))
	if _, err := os.Stat(filepath.Join(site, "libmetricq", "_lib", "libmetricq.so.0")); err != nil {
		t.Fatalf("the installed package lacks its bundled library: %v", err)
	}
	env := harness.Start(t, nil)
	var clean []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LIBMETRICQ_PATH=") && !strings.HasPrefix(kv, "PYTHONPATH=") && !strings.HasPrefix(kv, "LD_LIBRARY_PATH=") {
			clean = append(clean, kv)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, filepath.Join(root, "examples", "python", "batch_source.py"),
		"--url", env.URL, "--token", "install-python-batch", "--metric", "install.python.batch",
		"--rate", "1000", "--batch", "0.1", "--duration", "0.5")
	cmd.Dir = t.TempDir() // not the repository: the package must come from site
	cmd.Env = append(clean, "PYTHONPATH="+site)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("batch_source.py: %v\n%s", err, out)
	}
	var sent int
	if _, err := fmt.Sscanf(string(out[strings.LastIndex(string(out), "sent "):]), "sent %d points", &sent); err != nil || sent < 100 {
		t.Fatalf("batch_source.py printed %q", out)
	}
	env.Sink.WaitFor(map[string]int{"install.python.batch": sent}, 20*time.Second, 300*time.Millisecond)
	if got := env.Sink.Count("install.python.batch"); got != sent {
		t.Fatalf("%d points received, %d sent", got, sent)
	}
}
