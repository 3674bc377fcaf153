// Package contract checks that every face of libmetricq says what
// include/metricq.h says. The header is the one place the C contract is
// written: its status codes and other constants, the fields of mq_stats in
// order, and its functions. The bindings (Python's _lib.py, Fortran's
// metricq.f90, C++'s metricq.hpp), the Go side of the C library (its C
// entry points, the status codes of syncsource, the stats field count) and
// the linker's export list (libmetricq.map) each repeat part of it; this
// test parses them all and names every difference.
package contract

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/libmetricq/libmetricq/internal/testenv"
)

// header is what include/metricq.h defines.
type header struct {
	constants map[string]string // MQ_* -> literal value (numbers and strings only)
	stats     []string          // mq_stats fields, in order
	functions []string          // mq_* functions, sorted
}

var (
	commentRE  = regexp.MustCompile(`(?s)/\*.*?\*/`)
	defineRE   = regexp.MustCompile(`(?m)^#define\s+(MQ_\w+)\s+(-?[0-9][0-9.]*|"[^"]*")\s*$`)
	statsRE    = regexp.MustCompile(`(?s)typedef struct mq_stats \{(.*?)\} mq_stats;`)
	fieldRE    = regexp.MustCompile(`uint64_t\s+(\w+)\s*;`)
	functionRE = regexp.MustCompile(`(?m)^[A-Za-z_][\w \t]*?[\s*](mq_\w+)\s*\(`)
)

func parseHeader(text string) header {
	text = commentRE.ReplaceAllString(text, "")
	h := header{constants: map[string]string{}}
	for _, m := range defineRE.FindAllStringSubmatch(text, -1) {
		h.constants[m[1]] = m[2]
	}
	if m := statsRE.FindStringSubmatch(text); m != nil {
		for _, f := range fieldRE.FindAllStringSubmatch(m[1], -1) {
			h.stats = append(h.stats, f[1])
		}
	}
	h.functions = functionNames(text)
	return h
}

// functionNames are the mq_* names declared or defined at the start of a
// line (typedefs of function pointers, mq_*_fn, are not functions).
func functionNames(text string) []string {
	seen := map[string]bool{}
	for _, m := range functionRE.FindAllStringSubmatch(text, -1) {
		if !strings.HasPrefix(strings.TrimSpace(m[0]), "typedef") {
			seen[m[1]] = true
		}
	}
	return sortedKeys(seen)
}

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// face is what one binding or layer repeats of the header; nil parts are
// not repeated there (e.g. C++ uses the header's mq_stats itself).
type face struct {
	constants map[string]string // MQ_* names -> the value as written
	stats     []string
	functions []string
}

// sameValue compares a header literal with a binding's spelling of it:
// numbers numerically (Fortran's 60.0_real64 is 60.0), strings exactly.
func sameValue(want, got string) bool {
	if strings.HasPrefix(want, `"`) {
		return want == got
	}
	if i := strings.IndexByte(got, '_'); i > 0 {
		got = got[:i]
	}
	w, err1 := strconv.ParseFloat(want, 64)
	g, err2 := strconv.ParseFloat(got, 64)
	return err1 == nil && err2 == nil && w == g
}

// compare lists the differences of f from h. wantConstants says which
// header constants the face must carry (nil: none). exempt lists the
// header functions the face does not wrap yet, each with its reason; an
// exemption for a function it does wrap, or one the header lacks, is a
// difference too, so the list only shrinks.
func compare(name string, h header, f face, wantConstants func(string) bool, exempt map[string]string) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, name+": "+fmt.Sprintf(format, args...)) }
	if wantConstants != nil {
		for _, c := range sortedKeys(setOf(keys(h.constants))) {
			if !wantConstants(c) {
				continue
			}
			got, ok := f.constants[c]
			switch {
			case !ok:
				add("constant %s (%s in metricq.h) is missing", c, h.constants[c])
			case !sameValue(h.constants[c], got):
				add("constant %s is %s, metricq.h says %s", c, got, h.constants[c])
			}
		}
		for c, v := range f.constants {
			if _, ok := h.constants[c]; !ok {
				add("constant %s = %s is not in metricq.h", c, v)
			}
		}
	}
	if f.stats != nil && !slices.Equal(f.stats, h.stats) {
		add("mq_stats fields differ from metricq.h:\n    %s: %v\n    metricq.h: %v", name, f.stats, h.stats)
		for _, field := range h.stats {
			if !slices.Contains(f.stats, field) {
				add("mq_stats field %s is missing", field)
			}
		}
	}
	if f.functions != nil {
		have := setOf(f.functions)
		for _, fn := range h.functions {
			if !have[fn] {
				if _, ok := exempt[fn]; !ok {
					add("function %s of metricq.h is missing", fn)
				}
			}
		}
		declared := setOf(h.functions)
		for _, fn := range f.functions {
			if !declared[fn] {
				add("function %s is not in metricq.h", fn)
			}
		}
		for fn, why := range exempt {
			if have[fn] || !declared[fn] {
				add("stale exemption for %s (%s): remove it from the test", fn, why)
			}
		}
	}
	return problems
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func setOf(list []string) map[string]bool {
	set := map[string]bool{}
	for _, s := range list {
		set[s] = true
	}
	return set
}

// --- the faces -------------------------------------------------------------

var (
	pyConstRE    = regexp.MustCompile(`(?m)^([A-Z][A-Z0-9_]*)\s*=\s*(-?[0-9][0-9.]*|"[^"]*")\s*$`)
	pyStatsRE    = regexp.MustCompile(`(?s)class mq_stats\(ctypes\.Structure\):.*?for name in \((.*?)\)`)
	pyStringRE   = regexp.MustCompile(`"(\w+)"`)
	pyFunctionRE = regexp.MustCompile(`_proto\(\s*"(mq_\w+)"`)
)

// python: bindings/python/libmetricq/_lib.py. Its constants drop the MQ_
// prefix (ERR_INVALID, DEFAULT_TIMEOUT, LOG_WARN, VERSION_STRING).
func python(text string) face {
	f := face{constants: map[string]string{}}
	for _, m := range pyConstRE.FindAllStringSubmatch(text, -1) {
		if m[1] == "HEADER_VERSION" {
			continue // an alias of VERSION_STRING, kept for users
		}
		f.constants["MQ_"+m[1]] = m[2]
	}
	if m := pyStatsRE.FindStringSubmatch(text); m != nil {
		f.stats = []string{}
		for _, s := range pyStringRE.FindAllStringSubmatch(m[1], -1) {
			f.stats = append(f.stats, s[1])
		}
	}
	seen := map[string]bool{}
	for _, m := range pyFunctionRE.FindAllStringSubmatch(text, -1) {
		seen[m[1]] = true
	}
	f.functions = sortedKeys(seen)
	return f
}

var (
	fConstRE    = regexp.MustCompile(`(?i)\b(MQ_\w+)\s*=\s*(-?[0-9][0-9.]*(?:_\w+)?|"[^"]*")`)
	fStatsRE    = regexp.MustCompile(`(?is)type, bind\(C\), public :: mq_stats(.*?)end type mq_stats`)
	fFieldRE    = regexp.MustCompile(`(?i)integer\(c_int64_t\)\s*::\s*(\w+)`)
	fFunctionRE = regexp.MustCompile(`bind\(C,\s*name="(mq_\w+)"\)`)
)

// fortran: bindings/fortran/metricq.f90, constants with their MQ_ names.
func fortran(text string) face {
	f := face{constants: map[string]string{}}
	for _, line := range strings.Split(joinContinuations(text), "\n") {
		if !strings.Contains(strings.ToLower(line), "parameter") {
			continue
		}
		for _, m := range fConstRE.FindAllStringSubmatch(line, -1) {
			f.constants[strings.ToUpper(m[1])] = m[2]
		}
	}
	if m := fStatsRE.FindStringSubmatch(text); m != nil {
		f.stats = []string{}
		for _, s := range fFieldRE.FindAllStringSubmatch(m[1], -1) {
			f.stats = append(f.stats, s[1])
		}
	}
	seen := map[string]bool{}
	for _, m := range fFunctionRE.FindAllStringSubmatch(text, -1) {
		seen[m[1]] = true
	}
	f.functions = sortedKeys(seen)
	return f
}

// joinContinuations joins Fortran lines continued with a trailing "&" and
// drops "!" comments (none of the constants holds a "!").
func joinContinuations(text string) string {
	var out []string
	pending := ""
	for _, line := range strings.Split(text, "\n") {
		if i := strings.Index(line, "!"); i >= 0 && !strings.Contains(line[:i], `"`) {
			line = line[:i]
		}
		line = strings.TrimRight(line, " \t")
		if strings.HasSuffix(line, "&") {
			pending += strings.TrimSuffix(line, "&") + " "
			continue
		}
		out = append(out, pending+strings.TrimLeft(line, " \t&"))
		pending = ""
	}
	return strings.Join(out, "\n")
}

var (
	cppCallRE = regexp.MustCompile(`\b(mq_\w+)\s*\(`)
	cppCaseRE = regexp.MustCompile(`case (MQ_ERR_\w+):\s*throw (\w+)\(`)
)

// cpp: bindings/cpp/metricq.hpp. It includes metricq.h, so it repeats no
// constant or struct; what must match is the functions it calls and an
// exception class for every error status (as a face "constant" mapping
// the status to the class).
func cpp(text string) face {
	text = commentRE.ReplaceAllString(text, "")
	text = regexp.MustCompile(`//[^\n]*`).ReplaceAllString(text, "")
	f := face{constants: map[string]string{}}
	for _, m := range cppCaseRE.FindAllStringSubmatch(text, -1) {
		f.constants[m[1]] = m[2]
	}
	seen := map[string]bool{}
	for _, m := range cppCallRE.FindAllStringSubmatch(text, -1) {
		if !strings.HasSuffix(m[1], "_fn") {
			seen[m[1]] = true
		}
	}
	f.functions = sortedKeys(seen)
	return f
}

var (
	mapGlobalRE  = regexp.MustCompile(`(?s)global:(.*?)local:`)
	mapSymbolRE  = regexp.MustCompile(`\b(mq_\w+)\s*;`)
	goStatusRE   = regexp.MustCompile(`(?m)^\s*(?:OK|Status\w+)\s*=\s*(-?\d+)\s*//\s*(MQ_\w+)`)
	goStatsNumRE = regexp.MustCompile(`#define LIBMQ_STATS_FIELDS (\d+)`)
)

// linkerMap: libmetricq/capi/libmetricq.map names every exported function.
func linkerMap(text string) face {
	m := mapGlobalRE.FindStringSubmatch(commentRE.ReplaceAllString(text, ""))
	seen := map[string]bool{}
	if m != nil {
		for _, s := range mapSymbolRE.FindAllStringSubmatch(m[1], -1) {
			seen[s[1]] = true
		}
	}
	return face{functions: sortedKeys(seen)}
}

// goCAPI: the public C entry points the library defines (libmetricq/capi's
// C files), the status codes of libmetricq/syncsource, and the number of
// mq_stats fields the Go side fills.
func goCAPI(cFiles []string, statusGo, internalH string) face {
	f := face{constants: map[string]string{}}
	seen := map[string]bool{}
	for _, text := range cFiles {
		for _, fn := range functionNames(commentRE.ReplaceAllString(text, "")) {
			seen[fn] = true
		}
	}
	f.functions = sortedKeys(seen)
	for _, m := range goStatusRE.FindAllStringSubmatch(statusGo, -1) {
		f.constants[m[2]] = m[1]
	}
	if m := goStatsNumRE.FindStringSubmatch(internalH); m != nil {
		n, _ := strconv.Atoi(m[1])
		f.stats = make([]string, n) // only the count is repeated
	}
	return f
}

// --- the test ------------------------------------------------------------------

// notWrapped: header functions a face does not offer yet, and why.
var notWrapped = map[string]map[string]string{
	"c++": {
		"mq_source_new": "the constructor uses mq_source_create + connect()",
	},
}

type files map[string]string // path from the repository root -> text

func read(t *testing.T, root string, paths ...string) files {
	t.Helper()
	out := files{}
	for _, p := range paths {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		out[p] = string(b)
	}
	return out
}

const (
	headerPath   = "include/metricq.h"
	pythonPath   = "bindings/python/libmetricq/_lib.py"
	fortranPath  = "bindings/fortran/metricq.f90"
	cppPath      = "bindings/cpp/metricq.hpp"
	mapPath      = "libmetricq/capi/libmetricq.map"
	statusPath   = "libmetricq/syncsource/status.go"
	internalPath = "libmetricq/capi/capi_internal.h"
)

func repository(t *testing.T) files {
	t.Helper()
	root := testenv.Root(t)
	cFiles, err := filepath.Glob(filepath.Join(root, "libmetricq", "capi", "*.c"))
	if err != nil || len(cFiles) == 0 {
		t.Fatalf("no C files in libmetricq/capi: %v", err)
	}
	paths := []string{headerPath, pythonPath, fortranPath, cppPath, mapPath, statusPath, internalPath}
	for _, c := range cFiles {
		rel, _ := filepath.Rel(root, c)
		paths = append(paths, rel)
	}
	return read(t, root, paths...)
}

// check runs every comparison on the files' texts.
func check(fs files) []string {
	h := parseHeader(fs[headerPath])
	var cFiles []string
	for p, text := range fs {
		if strings.HasPrefix(p, "libmetricq/capi/") && strings.HasSuffix(p, ".c") {
			cFiles = append(cFiles, text)
		}
	}
	isStatus := func(c string) bool { return c == "MQ_OK" || strings.HasPrefix(c, "MQ_ERR_") }
	isError := func(c string) bool { return strings.HasPrefix(c, "MQ_ERR_") }
	all := func(string) bool { return true }
	var problems []string
	problems = append(problems, compare("python (_lib.py)", h, python(fs[pythonPath]), all, notWrapped["python"])...)
	problems = append(problems, compare("fortran (metricq.f90)", h, fortran(fs[fortranPath]), all, notWrapped["fortran"])...)
	// C++: every error status has its exception class (the values are
	// class names, not numbers: compare presence only).
	c := cpp(fs[cppPath])
	for _, name := range sortedKeys(setOf(keys(h.constants))) {
		if isError(name) {
			if _, ok := c.constants[name]; !ok {
				problems = append(problems, fmt.Sprintf("c++ (metricq.hpp): no exception class for %s in throw_error", name))
			}
		}
	}
	c.constants = nil
	problems = append(problems, compare("c++ (metricq.hpp)", h, c, nil, notWrapped["c++"])...)
	problems = append(problems, compare("linker map (libmetricq.map)", h, linkerMap(fs[mapPath]), nil, nil)...)
	g := goCAPI(cFiles, fs[statusPath], fs[internalPath])
	if len(g.stats) != len(h.stats) {
		problems = append(problems, fmt.Sprintf("go capi: LIBMQ_STATS_FIELDS is %d, mq_stats has %d fields", len(g.stats), len(h.stats)))
	}
	g.stats = nil
	problems = append(problems, compare("go capi (C entry points, syncsource statuses)", h, g, isStatus, nil)...)
	return problems
}

func TestContract(t *testing.T) {
	fs := repository(t)
	h := parseHeader(fs[headerPath])
	// The parse itself: what the header is known to hold.
	if len(h.stats) < 18 || h.stats[0] != "points_accepted" {
		t.Fatalf("parsed %d mq_stats fields from metricq.h: %v", len(h.stats), h.stats)
	}
	if len(h.functions) < 25 || !slices.Contains(h.functions, "mq_source_send") || slices.Contains(h.functions, "mq_config_fn") {
		t.Fatalf("parsed functions from metricq.h: %v", h.functions)
	}
	if h.constants["MQ_ERR_INTERNAL"] != "-9" || h.constants["MQ_VERSION_STRING"] == "" {
		t.Fatalf("parsed constants from metricq.h: %v", h.constants)
	}
	for _, p := range check(fs) {
		t.Error(p)
	}
}

// TestContractCatchesDrift: the check fails on copies of the repository's
// files with one thing dropped or changed in one face.
func TestContractCatchesDrift(t *testing.T) {
	fs := repository(t)
	before := strings.Join(check(fs), "\n")
	mutate := func(path, old, new string) files {
		t.Helper()
		if !strings.Contains(fs[path], old) {
			t.Fatalf("%s does not contain %q", path, old)
		}
		out := files{}
		for p, text := range fs {
			out[p] = text
		}
		out[path] = strings.Replace(fs[path], old, new, 1)
		return out
	}
	// mutateRE is mutate for text whose spacing gofmt may change.
	mutateRE := func(path, pattern, new string) files {
		t.Helper()
		re := regexp.MustCompile(pattern)
		match := re.FindString(fs[path])
		if match == "" {
			t.Fatalf("%s does not match %q", path, pattern)
		}
		return mutate(path, match, new)
	}
	for _, tc := range []struct {
		what      string
		files     files
		complaint string
	}{
		{"a dropped Python stats field", mutate(pythonPath, `"points_dropped",`, ""), "mq_stats field points_dropped is missing"},
		{"reordered Python stats fields", mutate(pythonPath, `"points_accepted",
            "points_published",`, `"points_published",
            "points_accepted",`), "mq_stats fields differ"},
		{"a dropped Fortran stats field", mutate(fortranPath, "integer(c_int64_t) :: data_connected = 0", ""), "mq_stats field data_connected is missing"},
		{"a changed Python status", mutate(pythonPath, "ERR_ORDER = -6", "ERR_ORDER = -60"), "constant MQ_ERR_ORDER is -60"},
		{"a dropped Fortran constant", mutate(fortranPath, "MQ_ERR_STOPPED = -8", "MQ_ERR_STOPPED_ = -8"), "constant MQ_ERR_STOPPED (-8 in metricq.h) is missing"},
		{"a changed Fortran default", mutate(fortranPath, "MQ_DEFAULT_TIMEOUT = 60.0_real64", "MQ_DEFAULT_TIMEOUT = 30.0_real64"), "constant MQ_DEFAULT_TIMEOUT is 30.0_real64"},
		{"a Python function missing", mutate(pythonPath, `_proto("mq_source_wait"`, `_proto("mq_source_waits"`), "function mq_source_wait of metricq.h is missing"},
		{"a Fortran function missing", mutate(fortranPath, `name="mq_source_flush"`, `name="mq_source_flushes"`), "function mq_source_flush of metricq.h is missing"},
		{"a C++ exception class missing", mutate(cppPath, "case MQ_ERR_ORDER:", "case MQ_ERR_ORDER_:"), "no exception class for MQ_ERR_ORDER"},
		{"a function missing from the linker map", mutate(mapPath, "mq_source_stats;", ""), "function mq_source_stats of metricq.h is missing"},
		{"a header function with no C entry point", mutate(headerPath, "int mq_source_stats(", "int mq_source_stats(void);\nint mq_source_statistics("), "go capi (C entry points, syncsource statuses): function mq_source_statistics of metricq.h is missing"},
		{"a Go status code changed", mutateRE(statusPath, `StatusOrder\s*= -6`, "StatusOrder = -16"), "constant MQ_ERR_ORDER is -16"},
		{"a header field the Go side does not fill", mutate(headerPath, "uint64_t management_connected;", "uint64_t management_connected;\n    uint64_t extra;"), "LIBMQ_STATS_FIELDS is 18, mq_stats has 19 fields"},
	} {
		problems := check(tc.files)
		found := false
		for _, p := range problems {
			found = found || strings.Contains(p, tc.complaint)
		}
		if !found || strings.Contains(before, tc.complaint) {
			t.Errorf("%s: no new complaint %q among %q", tc.what, tc.complaint, problems)
		}
	}
}
