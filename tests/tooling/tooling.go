// Package tooling checks that `make test` and `make demo` can work on a
// machine that has only what every Debian system has, plus Go, make and
// git: every tool a make rule, a script or a Go test run by make runs is
// either such a base tool or listed in scripts/ensure-tools.sh's table, and
// the make rule that runs it requires its ensure-NAME step (a script must
// call scripts/ensure-tools.sh for it). Check reads the makefiles, the
// scripts and the Go code as text; its test runs it on this repository and
// on broken copies.
package tooling

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// baseTools run on every Debian 12 system (its required packages: coreutils,
// util-linux, findutils, grep, sed, mawk, apt, dpkg, bash) or are the
// README's stated prerequisites (Go, make, git), plus shell builtins.
var baseTools = words(`
	go gofmt make git
	bash sh env exec setsid timeout nice command true false test [ echo printf read
	cd pwd exit return set shift trap wait kill sleep local declare export readonly
	eval source . : break continue type hash ulimit umask unset
	cat cp mv rm ln mkdir rmdir chmod chown chgrp touch install ls head tail cut tr
	sort uniq wc tee basename dirname realpath readlink mktemp id date od sha256sum
	seq yes nproc stat du df sync tac paste join comm ldd
	sed grep awk find xargs diff cmp flock tar gzip uname hostname
	apt-get dpkg apt-cache
	systemctl
`)

// optionalTools are run only when present, and their absence is reported,
// not fatal; each with why it is not ensured.
var optionalTools = map[string]string{
	"perf": "make bench profiles the C send path with perf when it runs; Debian's linux-perf must match the running kernel, which a container's does not",
}

func words(s string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(s) {
		m[w] = true
	}
	return m
}

// Table is scripts/ensure-tools.sh's table: which ensure NAME provides a
// command (or a file under the repository root, such as .venv/bin/python).
type Table struct {
	Names    map[string]bool
	provider map[string]string
}

// LoadTable reads the table from scripts/ensure-tools.sh --table.
func LoadTable(root string) (Table, error) {
	out, err := exec.Command("bash", filepath.Join(root, "scripts", "ensure-tools.sh"), "--table").Output()
	if err != nil {
		return Table{}, fmt.Errorf("scripts/ensure-tools.sh --table: %w", err)
	}
	t := Table{Names: map[string]bool{}, provider: map[string]string{}}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		t.Names[f[0]] = true
		for _, check := range f[2:] {
			if !strings.HasPrefix(check, ":") {
				t.provider[check] = f[0]
			}
		}
	}
	if len(t.Names) == 0 {
		return Table{}, fmt.Errorf("scripts/ensure-tools.sh --table printed no rows")
	}
	return t, nil
}

// Provider is the ensure NAME that provides the command word cmd ("" if
// none): by its name, or for a path by the table's path it ends with.
func (t Table) Provider(cmd string) string {
	if n, ok := t.provider[cmd]; ok {
		return n
	}
	for check, n := range t.provider {
		if strings.Contains(check, "/") && strings.HasSuffix(cmd, "/"+check) {
			return n
		}
	}
	return ""
}

// Report is what Check found.
type Report struct {
	// Uses: for each make rule (by its first target) and script, the
	// ensure NAMEs of the tools it runs.
	Uses map[string][]string
	// Problems: each a tool run without an ensure step that covers it.
	Problems []string
}

func (r *Report) use(who, name string) {
	for _, n := range r.Uses[who] {
		if n == name {
			return
		}
	}
	r.Uses[who] = append(r.Uses[who], name)
}

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// Check checks the makefiles (Makefile and what it includes), the scripts
// (scripts/*.sh, .ci/run) and the Go code run by their go test and go run
// commands, under root.
func Check(root string) (*Report, error) {
	table, err := LoadTable(root)
	if err != nil {
		return nil, err
	}
	mf := &makefile{vars: map[string]string{}, byTarget: map[string][]*rule{}}
	if err := mf.parse(root, "Makefile"); err != nil {
		return nil, err
	}
	rep := &Report{Uses: map[string][]string{}}
	for _, r := range mf.rules {
		checkRule(root, table, mf, r, rep)
	}
	scripts, _ := filepath.Glob(filepath.Join(root, "scripts", "*.sh"))
	if _, err := os.Stat(filepath.Join(root, ".ci", "run")); err == nil {
		scripts = append(scripts, filepath.Join(root, ".ci", "run"))
	}
	for _, s := range scripts {
		if err := checkScript(root, table, s, rep); err != nil {
			return nil, err
		}
	}
	sort.Strings(rep.Problems)
	return rep, nil
}

// checkRule: every tool r's recipe runs needs an ensure step among r's
// prerequisites (direct, order-only or further down), or earlier in the
// recipe itself.
func checkRule(root string, table Table, mf *makefile, r *rule, rep *Report) {
	if len(r.targets) == 0 || len(r.recipe) == 0 {
		return
	}
	who := r.targets[0]
	ensured := mf.ensuredBefore(r, table)
	for _, line := range r.recipe {
		text := mf.expand(strings.TrimLeft(line, "@-+"))
		for _, c := range shellCommands(text) {
			for _, name := range recipeNeeds(root, table, c, r.where, rep) {
				rep.use(who, name)
				if !ensured[name] {
					rep.problem("%s: make rule %s runs %s (%s) without requiring ensure-%s", r.where, who, c.name, name, name)
				}
			}
			for _, name := range ensuresOf(c, table) {
				ensured[name] = true
			}
		}
	}
}

// recipeNeeds: the ensure NAMEs a command of a recipe needs; reports the
// tools that no ensure step can cover.
func recipeNeeds(root string, table Table, c command, where string, rep *Report) []string {
	name := c.name
	switch {
	case strings.ContainsAny(name, "\x00$"):
		rep.problem("%s: cannot tell which tool %q runs (a make function or variable the check does not expand)", where, strings.ReplaceAll(name, "\x00", "$(...)"))
		return nil
	case name == "go":
		return goNeeds(root, table, c.args, where, rep)
	case table.Provider(name) != "":
		return []string{table.Provider(name)}
	case baseTools[name]:
		return nil
	case optionalTools[name] != "":
		return nil
	case strings.Contains(name, "/"):
		if _, err := os.Stat(filepath.Join(root, name)); err == nil {
			return nil // a script of the repository, checked on its own
		}
		if strings.HasPrefix(name, "build/") || strings.Contains(name, "/build/") {
			return nil // a program the build made
		}
	}
	rep.problem("%s: runs %s, which is neither in scripts/ensure-tools.sh's table nor a tool every Debian system has", where, name)
	return nil
}

var ensureArg = regexp.MustCompile(`^[a-z0-9+-]+$`)

// ensuresOf: the ensure NAMEs a command ensures (scripts/ensure-tools.sh
// NAME..., scripts/broker.sh ensure, or scripts/with-vhost.sh, which runs
// broker.sh ensure before its command).
func ensuresOf(c command, table Table) []string {
	base := filepath.Base(strings.Trim(c.name, `"'`))
	switch base {
	case "ensure-tools.sh":
		var names []string
		for _, a := range c.args {
			if table.Names[a] {
				names = append(names, a)
			}
		}
		return names
	case "broker.sh":
		if len(c.args) > 0 && c.args[0] == "ensure" {
			return []string{"broker"}
		}
	case "with-vhost.sh":
		return []string{"broker"}
	}
	return nil
}

// goNeeds: what the Go code a go test or go run command runs needs. For go
// test, the files of the packages it tests except the non-test files of
// commands (package main: a program the tests do not run as such); for go
// run, the package's non-test files. This package's own directory is left
// out: its tests name tools in broken fixtures on purpose. Tools are found as string literals naming a
// command of the table (wherever they are, as exec.Command("cmake") or
// tool("FC", "gfortran")) and as the first string literal given to
// exec.Command, exec.CommandContext, exec.LookPath, harness.Run and
// harness.RunErr, which must be a known tool.
//
// Whatever the subcommand, a package with import "C" needs the C compiler.
func goNeeds(root string, table Table, args []string, where string, rep *Report) []string {
	if len(args) == 0 {
		return nil
	}
	var needs []string
	for _, dir := range goPackageDirs(root, args[1:]) {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if src, err := os.ReadFile(f); err == nil && goImportC.Match(src) {
				needs = appendOnce(needs, table.Provider("cc"))
			}
		}
	}
	if args[0] != "test" && args[0] != "run" {
		return needs // build, vet, install: compile, do not run project code
	}
	test := args[0] == "test"
	for _, dir := range goPackageDirs(root, args[1:]) {
		if rel, _ := filepath.Rel(root, dir); rel == filepath.Join("tests", "tooling") {
			continue
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			src, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			isTest := strings.HasSuffix(f, "_test.go")
			if test && !isTest && goPackageMain.Match(src) || !test && isTest {
				continue
			}
			rel, _ := filepath.Rel(root, f)
			for _, n := range goFileNeeds(table, string(src), rel, rep) {
				needs = appendOnce(needs, n)
			}
		}
	}
	return needs
}

var (
	goPackageMain   = regexp.MustCompile(`(?m)^package main\b`)
	goImportC       = regexp.MustCompile(`(?m)^import "C"`)
	goStringLiteral = regexp.MustCompile(`"([A-Za-z0-9_.+/-]+)"`)
	goRunsLiteral   = regexp.MustCompile(`(?:exec\.(?:Command|LookPath)|exec\.CommandContext\([^,()]+,|harness\.Run\([^,()]+,[^,()]+,[^,()]+,|harness\.RunErr\([^,()]+,[^,()]+,)\(?\s*"([^"]+)"`)
)

func goFileNeeds(table Table, src, file string, rep *Report) []string {
	var needs []string
	for _, m := range goStringLiteral.FindAllStringSubmatch(src, -1) {
		if n := table.Provider(m[1]); n != "" && !strings.Contains(m[1], "/") {
			needs = appendOnce(needs, n)
		}
	}
	for _, m := range goRunsLiteral.FindAllStringSubmatch(src, -1) {
		tool := m[1]
		if table.Provider(tool) != "" || baseTools[tool] || optionalTools[tool] != "" {
			continue
		}
		rep.problem("%s: runs %s, which is neither in scripts/ensure-tools.sh's table nor a tool every Debian system has", file, tool)
	}
	return needs
}

// goPackageDirs: the directories of the package patterns ./x, ./x/... and
// ./... under root.
func goPackageDirs(root string, args []string) []string {
	var dirs []string
	for _, a := range args {
		if !strings.HasPrefix(a, "./") {
			continue
		}
		p := filepath.Join(root, strings.TrimSuffix(strings.TrimSuffix(a, "..."), "/"))
		if !strings.HasSuffix(a, "...") {
			dirs = append(dirs, p)
			continue
		}
		_ = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			if n := d.Name(); path != p && (strings.HasPrefix(n, ".") || strings.HasPrefix(n, "_") || n == "testdata" || n == "build") {
				return filepath.SkipDir
			}
			dirs = append(dirs, path)
			return nil
		})
	}
	return dirs
}

func appendOnce(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// checkScript: every tool of the table a script runs is ensured in that
// script (a call of scripts/ensure-tools.sh naming it); every other tool is
// a base tool. Words that are expansions ("$py") are not checked: a script
// runs what it computes at its own risk. scripts/ensure-tools.sh and
// scripts/lib.sh are the ensuring itself.
func checkScript(root string, table Table, path string, rep *Report) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	rel, _ := filepath.Rel(root, path)
	base := filepath.Base(path)
	text := stripHeredocs(string(src))
	funcs := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(\)`).FindAllStringSubmatch(text+libFunctions(root), -1) {
		funcs[m[1]] = true
	}
	cmds := shellCommands(text)
	ensured := map[string]bool{}
	for _, c := range cmds {
		for _, n := range ensuresOf(c, table) {
			ensured[n] = true
		}
	}
	machinery := base == "ensure-tools.sh" || base == "lib.sh"
	for _, c := range cmds {
		name := strings.Trim(c.name, `"'`)
		if funcs[name] || strings.ContainsAny(name, "$`") || name == "" {
			continue
		}
		n := table.Provider(name)
		switch {
		case n != "":
			rep.use(rel, n)
			if !ensured[n] && !machinery {
				rep.problem("%s: runs %s (%s) without calling scripts/ensure-tools.sh %s", rel, name, n, n)
			}
		case baseTools[name], optionalTools[name] != "":
		case strings.Contains(name, "/"):
			if _, err := os.Stat(filepath.Join(root, name)); err != nil && !strings.HasPrefix(name, "build/") {
				rep.problem("%s: runs %s, which is not in the repository", rel, name)
			}
		default:
			rep.problem("%s: runs %s, which is neither in scripts/ensure-tools.sh's table nor a tool every Debian system has", rel, name)
		}
	}
	return nil
}

// libFunctions: scripts/lib.sh, whose functions the scripts source.
func libFunctions(root string) string {
	b, _ := os.ReadFile(filepath.Join(root, "scripts", "lib.sh"))
	return "\n" + string(b)
}

var heredocStart = regexp.MustCompile(`<<-?\s*['"]?([A-Za-z_]+)['"]?`)

// stripHeredocs blanks the bodies of here-documents (data, not commands).
func stripHeredocs(text string) string {
	var out strings.Builder
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	end := ""
	for sc.Scan() {
		line := sc.Text()
		if end != "" {
			if strings.TrimSpace(line) == end {
				end = ""
			}
			out.WriteString("\n")
			continue
		}
		if m := heredocStart.FindStringSubmatch(line); m != nil {
			end = m[1]
		}
		out.WriteString(line + "\n")
	}
	return out.String()
}
