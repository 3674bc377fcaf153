package tooling

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestEveryToolIsEnsured: the repository's own makefiles, scripts and the Go
// code they run.
func TestEveryToolIsEnsured(t *testing.T) {
	root := repoRoot(t)
	rep, err := Check(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Problems {
		t.Error(p)
	}
	// The check sees the tools it must see (a check that finds nothing
	// would pass too).
	for who, names := range map[string][]string{
		"build/fortran/libmetricq_fortran.a": {"gfortran", "cc"},
		"build/examples/cpp/%":               {"g++"},
		"test-go":                            {"cc", "g++", "gfortran", "cmake", "pkg-config", "chromium", "broker"},
		"python":                             {"venv"},
		"build":                              {"cc"},
		"test-install":                       {"cmake", "pkg-config", "gfortran", "g++"},
		"bench":                              {"gnuplot"},
		"scripts/broker.sh":                  {"broker"},
	} {
		for _, n := range names {
			if !slices.Contains(rep.Uses[who], n) {
				t.Errorf("%s: the check found it uses %v, not %s", who, rep.Uses[who], n)
			}
		}
	}
	if t.Failed() {
		t.Logf("uses: %v", rep.Uses)
	}
}

// TestEnsureTargets: make has an ensure-NAME for every NAME of the table,
// and it runs scripts/ensure-tools.sh NAME.
func TestEnsureTargets(t *testing.T) {
	root := repoRoot(t)
	table, err := LoadTable(root)
	if err != nil {
		t.Fatal(err)
	}
	for name := range table.Names {
		out, err := exec.Command("make", "-C", root, "--no-print-directory", "-n", "ensure-"+name).CombinedOutput()
		if err != nil {
			t.Errorf("make -n ensure-%s: %v\n%s", name, err, out)
			continue
		}
		if got, want := strings.TrimSpace(string(out)), "scripts/ensure-tools.sh "+name; got != want {
			t.Errorf("make -n ensure-%s runs %q, want %q", name, got, want)
		}
	}
}

// copyRepo copies what the check reads (the makefiles and scripts) into a
// temporary root and returns it.
func copyRepo(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	dir := t.TempDir()
	for _, pattern := range []string{"Makefile", "mk/*.mk", "scripts/*.sh", ".ci/run"} {
		files, _ := filepath.Glob(filepath.Join(root, pattern))
		for _, f := range files {
			rel, _ := filepath.Rel(root, f)
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, dir, rel, string(b))
		}
	}
	return dir
}

func writeFile(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

// addMakefile adds mk/extra.mk with text, included by the Makefile.
func addMakefile(t *testing.T, root, text string) {
	t.Helper()
	writeFile(t, root, "mk/extra.mk", text)
	editFile(t, root, "Makefile", "include mk/bench.mk", "include mk/bench.mk\ninclude mk/extra.mk")
}

func editFile(t *testing.T, root, rel, old, new string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s does not contain %q", rel, old)
	}
	writeFile(t, root, rel, strings.Replace(string(b), old, new, 1))
}

// TestCheckFails: broken copies of the repository fail the check, each with
// a problem naming what is wrong; the unbroken copy passes.
func TestCheckFails(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, root string)
		want   string // in one of the problems; "" for none at all
	}{
		{"unbroken copy", func(*testing.T, string) {}, ""},
		{"ensure step removed from the Fortran library", func(t *testing.T, root string) {
			editFile(t, root, "mk/bindings.mk", "metricq.f90 | ensure-gfortran ensure-cc", "metricq.f90 | ensure-cc")
		}, "make rule build/fortran/libmetricq_fortran.a runs gfortran (gfortran) without requiring ensure-gfortran"},
		{"ensure step removed from the C++ examples", func(t *testing.T, root string) {
			editFile(t, root, "mk/bindings.mk", "libmetricq.so | ensure-g++", "libmetricq.so")
		}, "make rule build/examples/cpp/% runs c++ (g++) without requiring ensure-g++"},
		{"a tool outside the table", func(t *testing.T, root string) {
			addMakefile(t, root, "archive:\n\tzstd -q build/lib/libmetricq.so\n")
		}, "mk/extra.mk:1: runs zstd, which is neither in scripts/ensure-tools.sh's table"},
		{"a table tool with no ensure step", func(t *testing.T, root string) {
			addMakefile(t, root, "plot: lib\n\t@cd build && gnuplot plot.gp\n")
		}, "make rule plot runs gnuplot (gnuplot) without requiring ensure-gnuplot"},
		{"an install line back in .ci/run", func(t *testing.T, root string) {
			editFile(t, root, ".ci/run", "\nmake test\n", "\ncmake --version\nmake test\n")
		}, ".ci/run: runs cmake (cmake) without calling scripts/ensure-tools.sh cmake"},
		{"a Go test running a tool its make rule does not ensure", func(t *testing.T, root string) {
			writeFile(t, root, "tests/plot/plot_test.go", "package plot\n\nfunc run() { exec.Command(\"gnuplot\", \"x.gp\") }\n")
			addMakefile(t, root, "test-plot: lib\n\t$(GO) test ./tests/plot\n")
		}, "make rule test-plot runs go (gnuplot) without requiring ensure-gnuplot"},
		{"a Go test running an unknown tool", func(t *testing.T, root string) {
			writeFile(t, root, "tests/plot/plot_test.go", "package plot\n\nfunc run() { exec.CommandContext(ctx, \"zstd\", \"-d\") }\n")
		}, "tests/plot/plot_test.go: runs zstd"},
		{"an unexpandable command", func(t *testing.T, root string) {
			addMakefile(t, root, "odd:\n\t$(firstword $(wildcard /opt/x) cmake) --version\n")
		}, "cannot tell which tool"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := copyRepo(t)
			c.damage(t, root)
			rep, err := Check(root)
			if err != nil {
				t.Fatal(err)
			}
			if c.want == "" {
				if len(rep.Problems) > 0 {
					t.Fatalf("problems in an unbroken copy:\n%s", strings.Join(rep.Problems, "\n"))
				}
				return
			}
			for _, p := range rep.Problems {
				if strings.Contains(p, c.want) {
					return
				}
			}
			t.Fatalf("no problem contains %q; problems:\n%s", c.want, strings.Join(rep.Problems, "\n"))
		})
	}
}

// TestEnsureNotRoot: not as root, missing packages are not installed; one
// message names the one command that installs them all, and the exit
// status is 1. The tools are made missing by a PATH holding only what
// scripts/ensure-tools.sh itself needs; as root, the script runs as nobody.
func TestEnsureNotRoot(t *testing.T) {
	root := repoRoot(t)
	// Not t.TempDir, which only its owner may enter.
	bin, err := os.MkdirTemp("", "ensure-path-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bin) })
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"bash", "sed", "awk", "grep", "dirname", "id"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(filepath.Join(bin, "bash"), filepath.Join(root, "scripts", "ensure-tools.sh"), "gfortran", "cmake")
	cmd.Env = []string{"PATH=" + bin, "LC_ALL=C"}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit status: %v, want 1; output:\n%s", err, out)
	}
	want := "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y gfortran cmake\n"
	if n := strings.Count(string(out), want); n != 1 {
		t.Errorf("the install command %q appears %d times, want once; output:\n%s", want, n, out)
	}
	if strings.Contains(string(out), "apt-get install -y gfortran cmake (output:") {
		t.Errorf("it tried to install, not as root; output:\n%s", out)
	}
}
