// Package harness runs libmetricq's binding test programs (C++, Fortran,
// installed examples) against a real broker and a local MetricQ manager.
//
// A test starts an Env (the manager with the configurations it needs and a
// sink subscribed to every metric), runs a test program with RunProgram
// and checks what the sink received. The program speaks the line protocol
// of tests/c/check.h on stdout:
//
//	@@ point   METRIC T V                one point, in order (V: Go float syntax, e.g. C's %a)
//	@@ seq     METRIC N T0 DT V0 DV      N points (T0+i*DT, V0+i*DV), in order
//	@@ between METRIC TMIN TMAX V        one point with TMIN <= time <= TMAX (a point stamped "now")
//	@@ chunks  METRIC exact N1,N2,...    the sizes of the messages, in order
//	@@ chunks  METRIC max N              every message holds 1..N points
//	@@ config  TOKEN JSON                request: the manager sends a "config" RPC;
//	                                     answered on stdin with "ok" or "error TEXT"
//	@@ discover TOKEN                    request: the manager broadcasts discover;
//	                                     answered "ok" if TOKEN answered alive (with the
//	                                     library's metricqVersion), "ok version=V" if its
//	                                     reply also named its client version V, else
//	                                     "fail TEXT"
//	@@ cut                               request: the proxy at METRICQ_TEST_PROXY_URL (a
//	                                     URL of the test broker through a loopback TCP
//	                                     proxy) closes every connection and refuses new
//	                                     ones, for good; answered "ok"
//	@@ done                              the last line
//
// Every other line (and stderr) goes to the test log. Verify then checks
// that each metric named got exactly these points, once each, in order,
// chunked as said, and that no other metric with the program's prefix got
// data.
//
// The library is built with make (mk/capi.mk lib, mk/bindings.mk
// fortran-lib) unless LIBMETRICQ_BUILD names a build directory holding
// lib/ (and fortran/). Concurrent test binaries serialise their make runs
// with a lock file in the build directory.
//
// The broker and vhost locks are internal/testenv's (URL, ExclusiveVhost).
package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/libmetricq/libmetricq/internal/testenv"
)

// Root is the repository root (the directory holding go.mod).
func Root(t testing.TB) string {
	t.Helper()
	return testenv.Root(t)
}

// Run runs name with args in dir (env added to the environment) and
// returns its combined output, failing the test on an error.
func Run(t testing.TB, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := RunErr(dir, env, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// RunErr is Run returning the failure (for goroutines other than the
// test's); the error holds the command and its output.
func RunErr(dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

var (
	buildMu   sync.Mutex
	buildDone = map[string]bool{}
)

// BuildDir is the build directory: LIBMETRICQ_BUILD, else <root>/build.
func BuildDir(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("LIBMETRICQ_BUILD"); dir != "" {
		return dir
	}
	return filepath.Join(Root(t), "build")
}

// MakeVars are the make variables that point mk/capi.mk and mk/bindings.mk
// at LIBMETRICQ_BUILD, when set.
func MakeVars() []string {
	if dir := os.Getenv("LIBMETRICQ_BUILD"); dir != "" {
		return []string{"CAPI_BUILD=" + dir}
	}
	return nil
}

// Make runs make -f makefile targets... in the repository root, holding
// the build lock, at most once per process for the same arguments.
func Make(t testing.TB, makefile string, args ...string) {
	t.Helper()
	key := makefile + " " + strings.Join(args, " ")
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDone[key] {
		return
	}
	root, dir := Root(t), BuildDir(t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".make.lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck
	margs := append([]string{"--no-print-directory", "-f", makefile}, args...)
	margs = append(margs, MakeVars()...)
	Run(t, root, nil, "make", margs...)
	buildDone[key] = true
}

// BuildLib builds the C library (unless LIBMETRICQ_BUILD is set) and
// returns the build directory.
func BuildLib(t testing.TB) string {
	t.Helper()
	if os.Getenv("LIBMETRICQ_BUILD") == "" {
		Make(t, "mk/capi.mk", "lib")
	}
	return BuildDir(t)
}

// BuildFortran builds the Fortran module and libmetricq_fortran.a (and the
// C library) and returns the build directory.
func BuildFortran(t testing.TB) string {
	t.Helper()
	BuildLib(t)
	Make(t, "mk/bindings.mk", "fortran-lib")
	return BuildDir(t)
}

// LogWriter streams a child's output into the test log, line by line.
type LogWriter struct {
	T    testing.TB
	Name string
	mu   sync.Mutex
	buf  []byte
}

func (w *LogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			return len(p), nil
		}
		w.T.Logf("%s: %s", w.Name, w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

// Flush logs a last line without a newline.
func (w *LogWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.T.Logf("%s: %s", w.Name, w.buf)
		w.buf = nil
	}
}

// LinkFlags are the linker arguments for a program linked against the
// built library in dir (BuildLib's result), with an rpath to it.
func LinkFlags(dir string) []string {
	lib := filepath.Join(dir, "lib")
	return []string{"-L" + lib, "-lmetricq", "-Wl,-rpath," + lib}
}
