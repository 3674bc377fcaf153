package tooling

import "strings"

// shellCommands returns the words of a shell text that run as commands: the
// first word of every simple command (after VAR=value assignments), also
// inside $(...), backticks and "$(...)", and the command a wrapper such as
// env, setsid, timeout or exec runs. It is a scanner for this repository's
// recipes and scripts, not a shell parser: words it cannot place (case
// patterns, for headers, arithmetic, test expressions) it leaves out rather
// than call them commands.
func shellCommands(text string) []command {
	var s scanner
	s.scan(text)
	return s.commands
}

// command is a word run as a command and the words after it, as written.
type command struct {
	name string
	args []string
}

type scanner struct {
	commands []command
}

// Keywords after which the next word is a command again.
var shellKeywords = map[string]bool{
	"if": true, "then": true, "else": true, "elif": true, "fi": true, "do": true,
	"done": true, "while": true, "until": true, "!": true, "time": true, "esac": true,
	"{": true, "}": true,
}

// Wrappers run the command named by their first non-option argument; the
// number is how many arguments come before it (timeout's duration).
// scripts/with-vhost.sh runs its arguments against a fresh vhost.
var shellWrappers = map[string]int{"env": 0, "exec": 0, "setsid": 0, "nice": 0, "timeout": 1, "with-vhost.sh": 0}

func wrapperName(w string) string {
	if strings.HasSuffix(w, "/with-vhost.sh") {
		return "with-vhost.sh"
	}
	return w
}

type word struct {
	text string
	op   bool // an operator: ; & && || | ( ) ;; or a newline
}

func (s *scanner) scan(text string) {
	words := s.split(text)
	atCommand := true
	current := -1     // the command whose arguments follow, in s.commands
	wrapperSkip := -1 // arguments still to skip before a wrapped command
	state := ""       // "for", "case", "pattern": headers whose words are no commands
	for i := 0; i < len(words); i++ {
		w := words[i]
		switch {
		case w.op && w.text == "(" && i > 0 && strings.HasSuffix(words[i-1].text, "="):
			// An array assignment, x=(...) or x+=(...): words, not commands.
			for depth := 1; i+1 < len(words) && depth > 0; i++ {
				switch words[i+1].text {
				case "(":
					depth++
				case ")":
					depth--
				}
			}
			continue
		case w.op:
			switch {
			case state == "pattern" && w.text == ")":
				state = ""
			case state == "for" && (w.text == ";" || w.text == "\n"):
				state = ""
			case w.text == ";;":
				state = "pattern"
			}
			atCommand = true
			current = -1
			wrapperSkip = -1
			continue
		case state == "case":
			if w.text == "in" {
				state = "pattern"
			}
			continue
		case state != "":
			if state == "pattern" && w.text == "esac" {
				state = ""
			}
			continue
		}
		t := w.text
		if current >= 0 {
			s.commands[current].args = append(s.commands[current].args, t)
		}
		if !atCommand {
			continue
		}
		if shellKeywords[t] {
			continue
		}
		switch t {
		case "for", "select":
			if i+1 < len(words) && words[i+1].text == "((" {
				// for ((init; test; step)): arithmetic, up to do.
				for i+1 < len(words) && words[i+1].text != "))" {
					i++
				}
				i++ // the ))
				continue
			}
			state = "for"
			continue
		case "case":
			state = "case"
			continue
		case "[[", "((":
			// A test or arithmetic expression: no command until it closes.
			end := map[string]string{"[[": "]]", "((": "))"}[t]
			for i+1 < len(words) && words[i+1].text != end {
				i++
			}
			i++ // the closing ]] or ))
			atCommand = false
			continue
		}
		if strings.Trim(t, "0123456789<>&") == "" {
			i++ // a redirection and its file
			continue
		}
		if isAssignment(t) || strings.HasPrefix(t, ">") || strings.HasPrefix(t, "<") || startsWithRedirect(t) {
			continue
		}
		if wrapperSkip >= 0 {
			if strings.HasPrefix(t, "-") {
				continue
			}
			if wrapperSkip > 0 {
				wrapperSkip--
				continue
			}
		}
		s.commands = append(s.commands, command{name: t})
		current = len(s.commands) - 1
		if n, ok := shellWrappers[wrapperName(t)]; ok {
			wrapperSkip = n
			continue
		}
		wrapperSkip = -1
		atCommand = false
	}
}

func isAssignment(w string) bool {
	eq := strings.IndexByte(w, '=')
	if eq <= 0 {
		return false
	}
	name := strings.TrimSuffix(w[:eq], "+")
	if name == "" {
		return false
	}
	for i, c := range name {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func startsWithRedirect(w string) bool {
	i := 0
	for i < len(w) && w[i] >= '0' && w[i] <= '9' {
		i++
	}
	return i > 0 && i < len(w) && (w[i] == '>' || w[i] == '<')
}

// split cuts text into words and operators, scanning command
// substitutions (also inside double quotes) for commands of their own.
func (s *scanner) split(text string) []word {
	var words []word
	var cur strings.Builder
	inWord := false
	flush := func() {
		if inWord {
			words = append(words, word{text: cur.String()})
			cur.Reset()
			inWord = false
		}
	}
	add := func(c byte) { cur.WriteByte(c); inWord = true }
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case c == '\\' && i+1 < len(text):
			if text[i+1] != '\n' {
				add(c)
				add(text[i+1])
			}
			i++
		case c == '\'':
			end := len(text) - 1
			if j := strings.IndexByte(text[i+1:], '\''); j >= 0 {
				end = i + 1 + j
			}
			cur.WriteString(text[i : end+1])
			inWord = true
			i = end
		case c == '"':
			end := s.doubleQuoted(text, i+1)
			cur.WriteString(text[i:min(end+1, len(text))])
			inWord = true
			i = end
		case c == '$' && i+1 < len(text) && (text[i+1] == '(' || text[i+1] == '{'):
			end := matching(text, i+1)
			if text[i+1] == '(' && !strings.HasPrefix(text[i+1:], "((") {
				s.scan(text[i+2 : end])
			}
			cur.WriteString(text[i:min(end+1, len(text))])
			inWord = true
			i = end
		case c == '`':
			j := strings.IndexByte(text[i+1:], '`')
			if j < 0 {
				j = len(text) - i - 1
			}
			s.scan(text[i+1 : i+1+j])
			cur.WriteString(text[i:min(i+j+2, len(text))])
			inWord = true
			i += j + 1
		case c == '#' && !inWord:
			for i < len(text) && text[i] != '\n' {
				i++
			}
			i--
		case c == ' ' || c == '\t':
			flush()
		case c == '\n' || c == ';' || c == '&' || c == '|' || c == '(' || c == ')':
			if c == '&' && inWord && strings.HasSuffix(cur.String(), ">") {
				add(c) // 2>&1, 9>&-
				continue
			}
			flush()
			op := string(c)
			if i+1 < len(text) && (text[i+1] == c && c != '\n' || c == '|' && text[i+1] == '&') {
				op += string(text[i+1])
				i++
			}
			if op == "((" || op == "))" {
				words = append(words, word{text: op})
				continue
			}
			words = append(words, word{text: op, op: true})
		default:
			add(c)
		}
	}
	flush()
	return words
}

// doubleQuoted scans a double-quoted string from start (after the quote)
// for command substitutions; it returns the index of the closing quote.
func (s *scanner) doubleQuoted(text string, start int) int {
	for i := start; i < len(text); i++ {
		switch text[i] {
		case '\\':
			i++
		case '"':
			return i
		case '$':
			if i+1 < len(text) && (text[i+1] == '(' || text[i+1] == '{') {
				end := matching(text, i+1)
				if text[i+1] == '(' && !strings.HasPrefix(text[i+1:], "((") {
					s.scan(text[i+2 : end])
				}
				i = end
			}
		case '`':
			j := strings.IndexByte(text[i+1:], '`')
			if j < 0 {
				return len(text)
			}
			s.scan(text[i+1 : i+1+j])
			i += j + 1
		}
	}
	return len(text)
}

// matching returns the index of the bracket closing the one at open,
// skipping quoted text.
func matching(text string, open int) int {
	closer := map[byte]byte{'(': ')', '{': '}'}[text[open]]
	depth := 0
	for i := open; i < len(text); i++ {
		switch c := text[i]; c {
		case '\\':
			i++
		case '\'':
			if j := strings.IndexByte(text[i+1:], '\''); j >= 0 {
				i += j + 1
			}
		case '"':
			for i++; i < len(text) && text[i] != '"'; i++ {
				if text[i] == '\\' {
					i++
				}
			}
		case text[open]:
			depth++
		case closer:
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return len(text)
}
