package amqpkit

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestURLErrorsHoldNoPassword(t *testing.T) {
	for _, raw := range []string{"http://user:hunter2@host/", "amqp://user:hunter2@host:notaport/", "amqp://user:hun?ter2@host/", "amqp://user:hunter2@ho st/", "amqp://user:hunter2@[::1/"} {
		_, err := ParseURL(raw)
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("%s: want ErrInvalid, got %v", RedactURL(raw), err)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("error leaks the password: %v", err)
		}
	}
	if got := RedactURL("amqp://user:hunter2@host/"); strings.Contains(got, "hunter2") || !strings.Contains(got, "user") {
		t.Fatalf("RedactURL = %q", got)
	}
}

func TestPasswordOfAndRedaction(t *testing.T) {
	cases := map[string]string{
		"amqp://u:pw@host/":                       "pw",
		"amqp://u:pw@host/v?cacertfile=/a@b":      "pw",
		"amqp://u:p%40ss@host/":                   "p%40ss",
		"amqp://u:pa/ss@host/":                    "pa/ss",
		"amqp://host/?x=a:b@c":                    "",
		"amqps://u@host/":                         "",
		"not a url":                               "",
		"amqp://user:hunter2@host:notaport/vhost": "hunter2",
	}
	for raw, want := range cases {
		if got := passwordOf(raw); got != want {
			t.Errorf("passwordOf(%q) = %q, want %q", raw, got, want)
		}
	}
	text := RedactText("amqp://u:p%40ss@host/", "login as u with p@ss and p%40ss failed")
	if strings.Contains(text, "p@ss") || strings.Contains(text, "p%40ss") {
		t.Errorf("RedactText left the password: %s", text)
	}
}

func TestRedactorForms(t *testing.T) {
	cases := map[string]string{
		"amqp://u:s3cret@h/":         "s3cret",
		"amqp://u:s3%2Fcret@h/":      "s3/cret",
		"amqp://u:pw-s3cret@[::1/":   "pw-s3cret", // does not parse
		"amqps://u:a%40b-s3cret@h:1": "a@b-s3cret",
	}
	for u, pw := range cases {
		text := "url " + u + " password " + pw + " escaped " + url.QueryEscape(pw) + " " + url.PathEscape(pw)
		if got := RedactText(u, text); strings.Contains(got, "s3") {
			t.Errorf("RedactText(%q): %q", u, got)
		}
	}
	if got := RedactText("amqp://h/", "amqp://h/ text"); got != "amqp://h/ text" {
		t.Errorf("no password: %q", got)
	}
	if NewRedactor("amqp://u@h/") != nil {
		t.Error("a URL without a password needs no redactor")
	}
}
