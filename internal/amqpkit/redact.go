package amqpkit

import (
	"net/url"
	"strings"
)

// redacted stands in for a password in every text the project writes.
const redacted = "xxxxx"

// RedactURL replaces the password of a URL with "xxxxx" so that it can be
// logged. Text that does not parse as a URL is replaced as a whole.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}

// Redactor removes every copy of one URL's password from texts: as written
// in the URL, decoded, and in the escaped forms other code may print. A nil
// Redactor (a URL without a password) leaves texts as they are.
type Redactor struct{ replacer *strings.Replacer }

// NewRedactor prepares the redaction of rawURL's password, also for a URL
// that does not parse. It returns nil when the URL has no password.
func NewRedactor(rawURL string) *Redactor {
	pw := passwordOf(rawURL)
	if pw == "" {
		return nil
	}
	// The whole URL first: texts from net/url quote it, and the redacted
	// form keeps the user and host readable.
	pairs := []string{rawURL, RedactURL(rawURL)}
	seen := map[string]bool{"": true}
	add := func(form string) {
		if !seen[form] {
			seen[form] = true
			pairs = append(pairs, form, redacted)
		}
	}
	add(pw)
	if decoded, err := url.PathUnescape(pw); err == nil {
		add(decoded)
		add(url.QueryEscape(decoded))
		add(url.PathEscape(decoded))
		add(url.UserPassword("", decoded).String()[1:])
	}
	return &Redactor{replacer: strings.NewReplacer(pairs...)}
}

// Text returns text without the password.
func (r *Redactor) Text(text string) string {
	if r == nil {
		return text
	}
	return r.replacer.Replace(text)
}

// RedactText removes rawURL's password from text.
func RedactText(rawURL, text string) string { return NewRedactor(rawURL).Text(text) }

// passwordOf finds the password in "scheme://user:password@host...", as
// written there (still escaped), also in a URL that does not parse.
func passwordOf(rawURL string) string {
	_, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return ""
	}
	if end := strings.IndexAny(rest, "/?#"); end >= 0 && strings.LastIndex(rest[:end], "@") >= 0 {
		rest = rest[:end]
	}
	at := strings.LastIndex(rest, "@")
	// An "@" in the query or fragment is not the end of a user part.
	if at < 0 || strings.ContainsAny(rest[:at], "?#") {
		return ""
	}
	_, pw, _ := strings.Cut(rest[:at], ":")
	return pw
}
