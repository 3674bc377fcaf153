package tooling

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// makefile is what the check needs of GNU make's view of the makefiles:
// variables (every assignment applied in order, both branches of a
// conditional alike) and rules with their prerequisites and recipes.
type makefile struct {
	vars     map[string]string
	rules    []*rule
	byTarget map[string][]*rule
	included map[string]bool
}

type rule struct {
	targets []string // expanded; a target the check cannot expand is left out
	prereqs []string // normal and order-only, expanded
	recipe  []string // the lines, continuations joined, not expanded
	where   string   // file:line
}

var (
	makeAssign  = regexp.MustCompile(`^(?:override\s+|export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*(\?=|::=|:=|\+=|!=|=)\s*(.*)$`)
	makeInclude = regexp.MustCompile(`^-?include\s+(.+)$`)
	makeIgnored = regexp.MustCompile(`^(ifeq|ifneq|ifdef|ifndef|else|endif|export|unexport|vpath)\b`)
)

// parse reads file (relative to root) and, at their place, the makefiles it
// includes.
func (m *makefile) parse(root, file string) error {
	if m.included == nil {
		m.included = map[string]bool{}
	}
	if m.included[file] {
		return nil
	}
	m.included[file] = true
	src, err := os.ReadFile(filepath.Join(root, file))
	if err != nil {
		return err
	}
	lines := strings.Split(string(src), "\n")
	var current *rule
	for i := 0; i < len(lines); i++ {
		start := i
		line := lines[i]
		recipe := strings.HasPrefix(line, "\t") && current != nil
		for strings.HasSuffix(line, "\\") && i+1 < len(lines) {
			i++
			if recipe {
				line += "\n" + lines[i]
			} else {
				line = strings.TrimSuffix(line, "\\") + " " + strings.TrimSpace(lines[i])
			}
		}
		where := fmt.Sprintf("%s:%d", file, start+1)
		if recipe {
			current.recipe = append(current.recipe, strings.TrimPrefix(line, "\t"))
			continue
		}
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		current = nil
		switch {
		case makeIgnored.MatchString(trimmed):
		case makeInclude.MatchString(trimmed):
			for _, f := range strings.Fields(m.expand(makeInclude.FindStringSubmatch(trimmed)[1])) {
				if err := m.parse(root, f); err != nil {
					return fmt.Errorf("%s: %w", where, err)
				}
			}
		case makeAssign.MatchString(trimmed) && !isRuleLine(trimmed):
			a := makeAssign.FindStringSubmatch(trimmed)
			name, op, value := a[1], a[2], a[3]
			switch op {
			case "?=":
				if _, ok := m.vars[name]; !ok {
					m.vars[name] = value
				}
			case "+=":
				m.vars[name] = strings.TrimSpace(m.vars[name] + " " + value)
			case ":=", "::=":
				m.vars[name] = m.expandKeepDollars(value)
			default:
				m.vars[name] = value
			}
		default:
			current = m.addRule(trimmed, where)
		}
	}
	return nil
}

// isRuleLine tells a rule whose prerequisites hold "=" (none here, but
// target: VAR=value is a target-specific variable) from an assignment.
func isRuleLine(line string) bool {
	colon := outsideRefs(line, ':')
	eq := outsideRefs(line, '=')
	return colon >= 0 && (eq < 0 || colon < eq) && !strings.HasPrefix(line[colon:], ":=") && !strings.HasPrefix(line[colon:], "::=")
}

// outsideRefs: the index of the first c not inside $(...) or ${...}; -1 if none.
func outsideRefs(s string, c byte) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '$' && i+1 < len(s) && (s[i+1] == '(' || s[i+1] == '{'):
			depth++
			i++
		case depth > 0 && (s[i] == ')' || s[i] == '}'):
			depth--
		case depth == 0 && s[i] == c:
			return i
		}
	}
	return -1
}

func (m *makefile) addRule(line, where string) *rule {
	colon := outsideRefs(line, ':')
	if colon < 0 {
		return nil
	}
	targets, rest := line[:colon], strings.TrimPrefix(line[colon+1:], ":")
	var inline string
	if semi := outsideRefs(rest, ';'); semi >= 0 {
		rest, inline = rest[:semi], rest[semi+1:]
	}
	if c := outsideRefs(rest, ':'); c >= 0 { // static pattern rule: targets: pattern: prereqs
		rest = rest[c+1:]
	}
	r := &rule{where: where}
	for _, t := range strings.Fields(m.expand(targets)) {
		if !strings.ContainsRune(t, 0) {
			r.targets = append(r.targets, t)
		}
	}
	r.prereqs = strings.Fields(strings.ReplaceAll(m.expand(rest), "|", " "))
	if strings.TrimSpace(inline) != "" {
		r.recipe = append(r.recipe, strings.TrimSpace(inline))
	}
	m.rules = append(m.rules, r)
	for _, t := range r.targets {
		m.byTarget[t] = append(m.byTarget[t], r)
	}
	return r
}

// ensuredBefore: the ensure NAMEs r's prerequisites provide, through the
// whole prerequisite tree: ensure-NAME itself, or a rule whose recipe runs
// scripts/ensure-tools.sh NAME... (such as ensure-test).
func (m *makefile) ensuredBefore(r *rule, table Table) map[string]bool {
	ensured := map[string]bool{}
	seen := map[string]bool{}
	var visit func(target string)
	visit = func(target string) {
		if seen[target] {
			return
		}
		seen[target] = true
		if name, ok := strings.CutPrefix(target, "ensure-"); ok && table.Names[name] {
			ensured[name] = true
		}
		for _, pr := range m.rulesFor(target) {
			for _, line := range pr.recipe {
				for _, c := range shellCommands(m.expand(strings.TrimLeft(line, "@-+"))) {
					for _, n := range ensuresOf(c, table) {
						ensured[n] = true
					}
				}
			}
			for _, p := range pr.prereqs {
				visit(p)
			}
		}
	}
	for _, p := range r.prereqs {
		visit(p)
	}
	return ensured
}

// rulesFor: the explicit rules of target, or else the pattern rules
// matching it.
func (m *makefile) rulesFor(target string) []*rule {
	if rs := m.byTarget[target]; len(rs) > 0 {
		return rs
	}
	var rs []*rule
	for _, r := range m.rules {
		for _, t := range r.targets {
			if i := strings.IndexByte(t, '%'); i >= 0 && strings.HasPrefix(target, t[:i]) && strings.HasSuffix(target, t[i+1:]) {
				rs = append(rs, r)
			}
		}
	}
	return rs
}

// expand expands make variables and the functions the makefiles use in
// command position or in prerequisites (addprefix); anything else, and the
// automatic variables, becomes "\x00" (a word the check cannot know).
// $$ becomes $.
func (m *makefile) expand(s string) string {
	return strings.ReplaceAll(m.expandKeepDollars(s), "\x01", "$")
}

func (m *makefile) expandKeepDollars(s string) string { return m.expandDepth(s, 0) }

func (m *makefile) expandDepth(s string, depth int) string {
	if depth > 20 {
		return "\x00"
	}
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			out.WriteByte(s[i])
			continue
		}
		switch c := s[i+1]; c {
		case '$':
			out.WriteByte('\x01') // a literal $, kept from further expansion
			i++
		case '(', '{':
			end := matchingRef(s, i+1)
			inner := s[i+2 : end]
			out.WriteString(m.reference(inner, depth))
			i = end
		default:
			out.WriteByte(0) // $@ $< $* $^ $?
			i++
		}
	}
	return out.String()
}

func matchingRef(s string, open int) int {
	depth := 0
	for i := open; i < len(s); i++ {
		switch s[i] {
		case '(', '{':
			depth++
		case ')', '}':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return len(s) - 1
}

var builtinVars = map[string]string{"MAKE": "make", "CURDIR": "CURDIR", "CC": "cc", "CXX": "g++", "FC": "f77", "SHELL": "/bin/sh"}

func (m *makefile) reference(inner string, depth int) string {
	fn, args, isFn := strings.Cut(inner, " ")
	if !isFn {
		if v, ok := m.vars[inner]; ok {
			return m.expandDepth(v, depth+1)
		}
		if v, ok := builtinVars[inner]; ok {
			return v
		}
		if strings.ContainsAny(inner, "@<*^?%") {
			return "\x00"
		}
		return "" // an undefined variable is empty
	}
	switch fn {
	case "addprefix":
		prefix, list, _ := strings.Cut(args, ",")
		prefix = m.expandDepth(prefix, depth+1)
		var out []string
		for _, w := range strings.Fields(m.expandDepth(list, depth+1)) {
			out = append(out, prefix+w)
		}
		return strings.Join(out, " ")
	}
	return "\x00"
}
