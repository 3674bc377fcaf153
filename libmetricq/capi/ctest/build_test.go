package ctest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/libmetricq/libmetricq/libmetricq"
	"github.com/libmetricq/libmetricq/tests/harness"
)

// compileC builds a C program against include/ and build/lib.
func compileC(t testing.TB, out string, sources ...string) {
	t.Helper()
	root, b := harness.Root(t), harness.BuildLib(t)
	args := []string{"-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-pthread", "-I" + filepath.Join(root, "include"), "-o", out}
	for _, s := range sources {
		args = append(args, filepath.Join(root, s))
	}
	args = append(append(args, harness.LinkFlags(b)...), "-lm")
	harness.Run(t, root, nil, "cc", args...)
}

// TestHeaderCompiles: metricq.h alone, in strict C89-with-stdint, C99, C11
// and C++ (extern "C", no C-only constructs).
func TestHeaderCompiles(t *testing.T) {
	root := harness.Root(t)
	dir := t.TempDir()
	program := `#include "metricq.h"
#include <stdio.h>
int main(void) {
    mq_stats st;
    mq_source *src = mq_source_create("amqp://localhost/", "header-check");
    int rc = mq_source_stats(src, &st, sizeof st);
    mq_source_free(src);
    printf("%s %d %d\n", mq_version(), rc, MQ_VERSION_NUMBER);
    return rc == MQ_OK ? 0 : 1;
}
`
	c := filepath.Join(dir, "check.c")
	cpp := filepath.Join(dir, "check.cpp")
	if err := os.WriteFile(c, []byte(program), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cpp, []byte(program), 0o644); err != nil {
		t.Fatal(err)
	}
	inc := "-I" + filepath.Join(root, "include")
	for _, std := range []string{"-std=c99", "-std=c11", "-std=c17"} {
		harness.Run(t, dir, nil, "cc", std, "-pedantic-errors", "-Wall", "-Wextra", "-Werror", inc, "-fsyntax-only", c)
	}
	for _, std := range []string{"-std=c++11", "-std=c++17"} {
		harness.Run(t, dir, nil, "c++", std, "-pedantic-errors", "-Wall", "-Wextra", "-Werror", inc, "-fsyntax-only", cpp)
	}
	// Linked from C++ (the extern "C" guard makes the names match).
	b := harness.BuildLib(t)
	exe := filepath.Join(dir, "check-cpp")
	harness.Run(t, dir, nil, "c++", "-std=c++11", inc, "-o", exe, cpp, "-L"+filepath.Join(b, "lib"), "-lmetricq", "-Wl,-rpath,"+filepath.Join(b, "lib"))
	out := harness.Run(t, dir, nil, exe)
	if want := libmetricq.VersionString + " 0 "; !strings.HasPrefix(out, want) {
		t.Errorf("C++ program printed %q, want prefix %q", out, want)
	}
}

// TestVersionMacros: the header's version is the Go library's.
func TestVersionMacros(t *testing.T) {
	header, err := os.ReadFile(filepath.Join(harness.Root(t), "include", "metricq.h"))
	if err != nil {
		t.Fatal(err)
	}
	macro := func(name string) string {
		m := regexp.MustCompile(`(?m)^#define ` + name + `\s+(\S+)`).FindSubmatch(header)
		if m == nil {
			t.Fatalf("no #define %s", name)
		}
		return strings.Trim(string(m[1]), `"`)
	}
	got := macro("MQ_VERSION_MAJOR") + "." + macro("MQ_VERSION_MINOR") + "." + macro("MQ_VERSION_PATCH")
	if got != libmetricq.Version || macro("MQ_VERSION_STRING") != libmetricq.Version {
		t.Errorf("header version %s / %s, Go library %s", got, macro("MQ_VERSION_STRING"), libmetricq.Version)
	}
	if got := macro("MQ_DEFAULT_MAX_BUFFERED"); got != fmt.Sprint(libmetricq.DefaultMaxBufferedPoints) {
		t.Errorf("MQ_DEFAULT_MAX_BUFFERED %s, Go %d", got, libmetricq.DefaultMaxBufferedPoints)
	}
	if got := macro("MQ_MAX_NAME_LENGTH"); got != fmt.Sprint(libmetricq.MaxNameLength) {
		t.Errorf("MQ_MAX_NAME_LENGTH %s, Go %d", got, libmetricq.MaxNameLength)
	}
}

// prototype is a function declaration reduced to comparable type names.
type prototype struct {
	ret    string
	params []string
}

var (
	protoRE   = regexp.MustCompile(`(?m)^(?:extern\s+)?([A-Za-z_][\w\s\*]*?)\s*\b(mq_\w+)\s*\(([^)]*)\)\s*;`)
	commentRE = regexp.MustCompile(`(?s)/\*.*?\*/`)
)

// normalType maps a C parameter or return type to what crosses the ABI:
// every pointer-sized handle, user pointer and function pointer is "ptr"
// (cgo's side declares them uintptr_t or void*), and const is dropped.
func normalType(decl string, names map[string]bool) string {
	decl = strings.ReplaceAll(decl, "const", "")
	decl = strings.Join(strings.Fields(strings.ReplaceAll(decl, "*", " * ")), " ")
	// Drop the parameter name: the last identifier, if preceded by a type.
	fields := strings.Fields(decl)
	if len(fields) > 1 && fields[len(fields)-1] != "*" && !names[fields[len(fields)-1]] {
		fields = fields[:len(fields)-1]
	}
	decl = strings.Join(fields, " ")
	switch decl {
	case "uintptr_t", "void *", "mq_source *", "mq_stats *", "mq_config_fn", "mq_update_fn", "mq_log_fn":
		return "ptr"
	}
	return decl
}

var typeNames = map[string]bool{
	"int": true, "double": true, "size_t": true, "int64_t": true, "uintptr_t": true, "char": true, "void": true,
	"mq_source": true, "mq_stats": true, "mq_config_fn": true, "mq_update_fn": true, "mq_log_fn": true,
}

func prototypes(t *testing.T, text string) map[string]prototype {
	t.Helper()
	text = commentRE.ReplaceAllString(text, "")
	out := map[string]prototype{}
	for _, m := range protoRE.FindAllStringSubmatch(text, -1) {
		p := prototype{ret: normalType(m[1], typeNames)}
		if params := strings.TrimSpace(m[3]); params != "void" && params != "" {
			for _, param := range strings.Split(params, ",") {
				p.params = append(p.params, normalType(param, typeNames))
			}
		}
		out[m[2]] = p
	}
	return out
}

// TestExportsMatchHeader: the library exports exactly the functions
// include/metricq.h declares, and the Go exports (seen through cgo's
// generated header) have the header's signatures. The functions written in
// C (helpers.c) are checked by the compiler, which sees metricq.h there.
func TestExportsMatchHeader(t *testing.T) {
	root, b := harness.Root(t), harness.BuildLib(t)
	header, err := os.ReadFile(filepath.Join(root, "include", "metricq.h"))
	if err != nil {
		t.Fatal(err)
	}
	generated, err := os.ReadFile(filepath.Join(b, "cgo", "libmetricq.h"))
	if err != nil {
		t.Fatal(err)
	}
	declared := prototypes(t, string(header))
	// The Go exports are libmq_go_*, behind the C entry points of
	// entry_points.c (which the compiler checks against metricq.h).
	exported := prototypes(t, strings.ReplaceAll(string(generated), "libmq_go_", "mq_"))
	if len(declared) < 20 {
		t.Fatalf("found only %d prototypes in metricq.h", len(declared))
	}
	for name, p := range exported {
		if strings.HasPrefix(name, "mq_stage_") {
			continue // stage.c's own calls into Go, with no public counterpart
		}
		d, ok := declared[name]
		if !ok {
			t.Errorf("%s is exported by Go but not in metricq.h", name)
			continue
		}
		if fmt.Sprint(d) != fmt.Sprint(p) {
			t.Errorf("%s: metricq.h says %v, the Go export %v", name, d, p)
		}
	}
	var symbols []string
	for _, line := range strings.Split(harness.Run(t, root, nil, "nm", "-D", "--defined-only", filepath.Join(b, "lib", "libmetricq.so")), "\n") {
		if f := strings.Fields(line); len(f) == 3 {
			symbols = append(symbols, f[2])
		}
	}
	sort.Strings(symbols)
	var names []string
	for name := range declared {
		names = append(names, name)
	}
	sort.Strings(names)
	if fmt.Sprint(symbols) != fmt.Sprint(names) {
		t.Errorf("exported symbols differ from metricq.h:\n  library: %v\n  header:  %v", symbols, names)
	}
	soname := harness.Run(t, root, nil, "readelf", "-d", filepath.Join(b, "lib", "libmetricq.so"))
	if !strings.Contains(soname, "Library soname: [libmetricq.so.0]") {
		t.Errorf("no SONAME libmetricq.so.0:\n%s", soname)
	}
	for link, target := range map[string]string{"libmetricq.so": "libmetricq.so.0", "libmetricq.so.0": "libmetricq.so." + libmetricq.Version} {
		if got, err := os.Readlink(filepath.Join(b, "lib", link)); err != nil || got != target {
			t.Errorf("build/lib/%s -> %q (%v), want %s", link, got, err, target)
		}
	}
}

// TestDlopen: the library loads with dlopen, as Python's ctypes and other
// plugin hosts load it (a Go c-shared library has TLS constraints there),
// and mq_last_error works on the loading thread.
func TestDlopen(t *testing.T) {
	b := harness.BuildLib(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "dl.c")
	program := `#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    (void)argc;
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) { printf("dlopen: %s\n", dlerror()); return 1; }
    const char *(*version)(void) = (const char *(*)(void))dlsym(lib, "mq_version");
    const char *(*last_error)(void) = (const char *(*)(void))dlsym(lib, "mq_last_error");
    int (*flush)(void *, double) = (int (*)(void *, double))dlsym(lib, "mq_source_flush");
    void *hidden = dlsym(lib, "crosscall2");
    if (!version || !last_error || !flush) { printf("dlsym failed\n"); return 1; }
    int rc = flush(NULL, 1);
    printf("%s %d %s %s\n", version(), rc, strstr(last_error(), "invalid source handle") ? "ok" : last_error(),
           hidden ? "runtime-symbol-visible" : "hidden");
    return 0;
}
`
	if err := os.WriteFile(src, []byte(program), 0o644); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "dl")
	harness.Run(t, dir, nil, "cc", "-o", exe, src, "-ldl")
	out := strings.TrimSpace(harness.Run(t, dir, nil, exe, filepath.Join(b, "lib", "libmetricq.so.0")))
	if want := libmetricq.VersionString + " -1 ok hidden"; out != want {
		t.Errorf("dlopen program printed %q, want %q", out, want)
	}
}

// TestInstall: make install into a prefix, then build and run a program
// the way users do, through pkg-config.
func TestInstall(t *testing.T) {
	root := harness.Root(t)
	harness.BuildLib(t)
	prefix := t.TempDir()
	harness.Make(t, "mk/capi.mk", "install", "PREFIX="+prefix)
	for _, f := range []string{"lib/libmetricq.so." + libmetricq.Version, "lib/libmetricq.so.0", "lib/libmetricq.so", "include/metricq.h", "lib/pkgconfig/libmetricq.pc"} {
		if _, err := os.Stat(filepath.Join(prefix, f)); err != nil {
			t.Errorf("not installed: %s", f)
		}
	}
	if _, err := os.Stat(filepath.Join(prefix, "include", "libmetricq.h")); err == nil {
		t.Error("cgo's generated header was installed")
	}
	pcEnv := []string{"PKG_CONFIG_PATH=" + filepath.Join(prefix, "lib", "pkgconfig")}
	if got := strings.TrimSpace(harness.Run(t, root, pcEnv, "pkg-config", "--modversion", "libmetricq")); got != libmetricq.Version {
		t.Errorf("pkg-config --modversion: %q", got)
	}
	flags := strings.Fields(harness.Run(t, root, pcEnv, "pkg-config", "--cflags", "--libs", "libmetricq"))
	dir := t.TempDir()
	src := filepath.Join(dir, "v.c")
	if err := os.WriteFile(src, []byte("#include <metricq.h>\n#include <stdio.h>\nint main(void) { puts(mq_version()); return 0; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "v")
	harness.Run(t, dir, nil, "cc", append(append([]string{"-o", exe, src}, flags...), "-Wl,-rpath,"+filepath.Join(prefix, "lib"))...)
	if out := strings.TrimSpace(harness.Run(t, dir, nil, exe)); out != libmetricq.VersionString {
		t.Errorf("installed program printed %q", out)
	}
	ldd := harness.Run(t, dir, nil, "ldd", exe)
	if !strings.Contains(ldd, filepath.Join(prefix, "lib", "libmetricq.so.0")) {
		t.Errorf("program does not load the installed libmetricq.so.0:\n%s", ldd)
	}
}
