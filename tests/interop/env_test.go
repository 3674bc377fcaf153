package interop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// randomHex returns n random bytes in hex (metric name prefixes).
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// python returns the interpreter from METRICQ_PYTHON after checking that it
// imports the reference package metricq. These tests do not skip: without
// the reference they fail.
func python(t testing.TB) string {
	t.Helper()
	py := os.Getenv("METRICQ_PYTHON")
	if py == "" {
		t.Fatal("METRICQ_PYTHON is not set: the interop tests run the reference Python package metricq 5.4.0. " +
			"Create the virtualenv with `scripts/ensure-tools.sh venv` (or `make venv`) and run with " +
			"METRICQ_PYTHON=$PWD/.venv/bin/python (make test does this)")
	}
	out, err := exec.Command(py, "-c", "import metricq; print('metricq', metricq.__version__)").CombinedOutput()
	version, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "metricq ")
	if err != nil || !ok {
		t.Fatalf("METRICQ_PYTHON=%s cannot import metricq (run `scripts/ensure-tools.sh venv`): %v\n%s", py, err, out)
	}
	if !strings.HasPrefix(version, "5.") {
		t.Logf("warning: METRICQ_PYTHON has metricq %s; these tests were written against 5.4.0", version)
	}
	return py
}

// script returns the absolute path of a helper script in this directory.
func script(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("helper script: %v", err)
	}
	return p
}

// syncBuffer is a bytes.Buffer safe for concurrent writers and readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a child process whose stdout is read line by line.
type proc struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan []byte // stdout, one line each; closed at EOF
	stderr *syncBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // its exit error, valid after done
}

// start runs name with args. The process is killed when ctx ends and at the
// end of the test; its stderr is logged when the test fails.
func start(ctx context.Context, t testing.TB, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: filepath.Base(name), lines: make(chan []byte, 4096), stderr: &syncBuffer{}, done: make(chan struct{})}
	if len(args) > 0 && strings.HasSuffix(args[0], ".py") {
		p.name = filepath.Base(args[0])
	}
	p.cmd = exec.CommandContext(ctx, name, args...)
	p.cmd.WaitDelay = 5 * time.Second
	p.cmd.Stderr = p.stderr
	// Unbuffered Python output; the scripts flush each line anyway.
	p.cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	var reader sync.WaitGroup
	reader.Add(1)
	go func() {
		defer reader.Done()
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
		for sc.Scan() {
			p.lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	go func() {
		// Wait only after stdout has been read to the end (os/exec rule).
		reader.Wait()
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.stdin.Close()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", p.name, p.stderr.String())
		}
	})
	return p
}

// next returns the next stdout line, failing the test when the process
// ends or ctx does first.
func (p *proc) next(ctx context.Context, waitingFor string) []byte {
	p.t.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok {
			<-p.done
			p.t.Fatalf("%s exited (%v) while waiting for %s; stderr:\n%s", p.name, p.err, waitingFor, p.stderr.String())
		}
		return line
	case <-ctx.Done():
		p.t.Fatalf("timed out waiting for %s from %s: %v; stderr:\n%s", waitingFor, p.name, ctx.Err(), p.stderr.String())
	}
	return nil
}

// wait waits for the process to exit and fails the test unless it exited
// with status 0. Unread stdout lines stay available on p.lines.
func (p *proc) wait(ctx context.Context) {
	p.t.Helper()
	select {
	case <-p.done:
	case <-ctx.Done():
		p.t.Fatalf("%s did not exit: %v; stderr:\n%s", p.name, ctx.Err(), p.stderr.String())
	}
	if p.err != nil {
		p.t.Fatalf("%s failed: %v; stderr:\n%s", p.name, p.err, p.stderr.String())
	}
}

// event is the "event" key of a helper script's output line ("" for a
// data point).
func event(t testing.TB, line []byte) string {
	t.Helper()
	var e struct {
		Event string `json:"event"`
	}
	if err := json.Unmarshal(line, &e); err != nil {
		t.Fatalf("helper printed a line that is not JSON: %q: %v", line, err)
	}
	return e.Event
}

// subscribedHandler passes log records on and reports the token of every
// sink the manager has subscribed ("sink subscribed" is logged after the
// data queue is declared and bound, so points published afterwards are
// queued for that sink).
type subscribedHandler struct {
	slog.Handler
	subscribed chan string
}

func (h subscribedHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "sink subscribed" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "token" {
				select {
				case h.subscribed <- a.Value.String():
				default:
				}
			}
			return true
		})
	}
	return h.Handler.Handle(ctx, r)
}

func (h subscribedHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return subscribedHandler{h.Handler.WithAttrs(as), h.subscribed}
}

func (h subscribedHandler) WithGroup(name string) slog.Handler {
	return subscribedHandler{h.Handler.WithGroup(name), h.subscribed}
}
