package ctest

import (
	"context"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/tests/harness"
)

// settle is how long the sink keeps listening after the points expected
// have arrived, for duplicates and strays to show.
const settle = 500 * time.Millisecond

// runExamples builds examples/c and runs each against the manager: the
// minimal source sends COUNT points, the interval source a few rounds of
// real /proc readings; then the interval source again, ended by SIGTERM.
func runExamples(t *testing.T, s *harness.Sink, brokerURL string) {
	b := harness.BuildLib(t)
	harness.Make(t, "mk/capi.mk", "examples-c")
	bin := filepath.Join(b, "examples", "c")

	runExample := func(timeout time.Duration, name string, args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(bin, name), args...)
		cmd.Stdout = &harness.LogWriter{T: t, Name: name}
		cmd.Stderr = cmd.Stdout
		if err := cmd.Run(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	runExample(time.Minute, "minimal_source", brokerURL, "source-c-minimal-test-1", "5")
	const counter = "example.c.minimal.counter"
	s.WaitFor(map[string]int{counter: 5}, 30*time.Second, settle)
	got := s.Snapshot()[counter]
	if len(got) != 5 {
		t.Errorf("%s: %d messages, want 5", counter, len(got))
	}
	for i, c := range got {
		if len(c) != 1 || c[0].Value != float64(i) || (i > 0 && c[0].Time <= got[i-1][0].Time) {
			t.Errorf("%s: message %d is %v", counter, i, c)
		}
	}

	// rate 20 Hz from the manager's configuration; 4 rounds.
	runExample(time.Minute, "interval_source", brokerURL, "source-c-interval-test", "4")
	prefix := "example.c.sysinfo"
	want := map[string]int{prefix + ".load1": 4, prefix + ".mem_available": 4, prefix + ".cpu_usage": 3}
	s.WaitFor(want, 30*time.Second, settle)
	snap := s.Snapshot()
	for metric, n := range want {
		var points int
		for _, c := range snap[metric] {
			points += len(c)
			for _, p := range c {
				bad := p.Value < 0 || (metric == prefix+".cpu_usage" && p.Value > 100) || (metric == prefix+".mem_available" && p.Value < 1<<20)
				if bad {
					t.Errorf("%s: implausible value %v", metric, p.Value)
				}
			}
		}
		if points != n {
			t.Errorf("%s: %d points, want %d", metric, points, n)
		}
	}

	// Until a signal: SIGTERM ends it cleanly, with exit status 0.
	cmd := exec.Command(filepath.Join(bin, "interval_source"), brokerURL, "source-c-interval-test", "0")
	cmd.Stderr = &harness.LogWriter{T: t, Name: "interval_source"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	before := s.Count(prefix + ".load1")
	// Signal it once it is running and its points arrive.
	for deadline := time.Now().Add(30 * time.Second); s.Count(prefix+".load1") < before+2; {
		if time.Now().After(deadline) {
			t.Fatal("interval_source sent nothing")
		}
		time.Sleep(10 * time.Millisecond) // polling the condition above
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("interval_source after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Error("interval_source did not end within 10 s of SIGTERM")
	}
	s.WaitFor(map[string]int{prefix + ".load1": before + 2}, 10*time.Second, settle)
	if after := s.Count(prefix + ".load1"); after < before+2 {
		t.Errorf("interval_source until SIGTERM: %d new load1 points", after-before)
	}
}
