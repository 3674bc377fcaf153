package main

import (
	"bytes"
	"strings"
	"testing"
)

// Every command answers -h with status 0 and a wrong argument count with
// status 2 and the reason, before it touches a broker.
func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		status int
		says   string
	}{
		{[]string{"-h"}, 0, "Flags:"},
		{[]string{"amqp://a/", "amqp://b/"}, 2, "too many arguments"},
		{[]string{"tail", "-h"}, 0, "prints each point"},
		{[]string{"tail", "amqp://a/"}, 2, "need URL and at least one METRIC"},
		{[]string{"watch", "-h"}, 0, "-title"},
		{[]string{"watch"}, 2, "need the broker URL"},
		{[]string{"tail", "-no-such-flag"}, 2, "no-such-flag"},
	} {
		var stdout, stderr bytes.Buffer
		if got := run(tc.args, &stdout, &stderr); got != tc.status {
			t.Errorf("%q: status %d, want %d (stderr: %s)", tc.args, got, tc.status, stderr.String())
		}
		if !strings.Contains(stderr.String(), tc.says) {
			t.Errorf("%q: stderr does not say %q:\n%s", tc.args, tc.says, stderr.String())
		}
	}
}
