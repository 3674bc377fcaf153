package ctest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
	"github.com/libmetricq/libmetricq/libmetricq/manager"
)

// sink records every data message the manager routes to it.
type sink struct {
	mu      sync.Mutex
	chunks  map[string][][]libmetricq.Point // metric -> messages, in arrival order
	changed chan struct{}
}

func startSink(t *testing.T, brokerURL string) *sink {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub, err := manager.SubscribeWith(ctx, brokerURL, testenv.Token(t, "sink-ctest"), []string{"#"}, manager.SubscribeOptions{Buffer: 4096})
	if err != nil {
		t.Fatalf("sink: %v", err)
	}
	s := &sink{chunks: map[string][][]libmetricq.Point{}, changed: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range sub.Chunks() {
			s.mu.Lock()
			s.chunks[c.Metric] = append(s.chunks[c.Metric], c.Points)
			s.mu.Unlock()
			select {
			case s.changed <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		_ = sub.Close()
		<-done
	})
	return s
}

func (s *sink) count(metric string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.chunks[metric] {
		n += len(c)
	}
	return n
}

func (s *sink) snapshot() map[string][][]libmetricq.Point {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][][]libmetricq.Point, len(s.chunks))
	for k, v := range s.chunks {
		out[k] = append([][]libmetricq.Point(nil), v...)
	}
	return out
}

// waitFor waits until every metric has at least want[metric] points, then
// a little longer, so that duplicates and strays have time to show.
func (s *sink) waitFor(want map[string]int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		missing := false
		for metric, n := range want {
			if s.count(metric) < n {
				missing = true
				break
			}
		}
		if !missing {
			break
		}
		select {
		case <-s.changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
	time.Sleep(500 * time.Millisecond)
}

// expectation is what the C program says a metric must receive.
type expectation struct {
	points    []libmetricq.Point
	exact     []int // message sizes, if given
	maxChunk  int   // every message 1..maxChunk points, if > 0
	chunkSpec bool
}

type expectations map[string]*expectation

func (e expectations) get(metric string) *expectation {
	if e[metric] == nil {
		e[metric] = &expectation{}
	}
	return e[metric]
}

// parse reads one expectation line (without "@@ ").
func (e expectations) parse(line string) error {
	f := strings.Fields(line)
	num := func(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) }
	switch {
	case f[0] == "point" && len(f) == 4:
		t, err := num(f[2])
		if err != nil {
			return err
		}
		v, err := strconv.ParseFloat(f[3], 64)
		if err != nil {
			return err
		}
		x := e.get(f[1])
		x.points = append(x.points, libmetricq.Point{Time: libmetricq.Timestamp(t), Value: v})
	case f[0] == "seq" && len(f) == 7:
		n, err1 := num(f[2])
		t0, err2 := num(f[3])
		dt, err3 := num(f[4])
		v0, err4 := strconv.ParseFloat(f[5], 64)
		dv, err5 := strconv.ParseFloat(f[6], 64)
		for _, err := range []error{err1, err2, err3, err4, err5} {
			if err != nil {
				return err
			}
		}
		x := e.get(f[1])
		for i := range n {
			x.points = append(x.points, libmetricq.Point{Time: libmetricq.Timestamp(t0 + i*dt), Value: v0 + float64(i)*dv})
		}
	case f[0] == "chunks" && len(f) == 4 && f[2] == "exact":
		x := e.get(f[1])
		x.chunkSpec = true
		for _, s := range strings.Split(f[3], ",") {
			n, err := strconv.Atoi(s)
			if err != nil {
				return err
			}
			x.exact = append(x.exact, n)
		}
	case f[0] == "chunks" && len(f) == 4 && f[2] == "max":
		n, err := strconv.Atoi(f[3])
		if err != nil {
			return err
		}
		x := e.get(f[1])
		x.chunkSpec, x.maxChunk = true, n
	default:
		return fmt.Errorf("unknown expectation %q", line)
	}
	return nil
}

func sameValue(a, b float64) bool {
	return math.Float64bits(a) == math.Float64bits(b) || (math.IsNaN(a) && math.IsNaN(b))
}

// verify compares what the sink got for metrics with the given prefix.
func (e expectations) verify(t *testing.T, got map[string][][]libmetricq.Point, prefix string) {
	t.Helper()
	for metric, chunks := range got {
		if strings.HasPrefix(metric, prefix) && e[metric] == nil {
			t.Errorf("%s: %d messages received, none expected", metric, len(chunks))
		}
	}
	for metric, x := range e {
		chunks := got[metric]
		var points []libmetricq.Point
		sizes := make([]int, len(chunks))
		for i, c := range chunks {
			points = append(points, c...)
			sizes[i] = len(c)
		}
		if len(points) != len(x.points) {
			t.Errorf("%s: received %d points, expected %d", metric, len(points), len(x.points))
		}
		for i := 0; i < min(len(points), len(x.points)); i++ {
			if points[i].Time != x.points[i].Time || !sameValue(points[i].Value, x.points[i].Value) {
				t.Errorf("%s: point %d is (%d, %v), expected (%d, %v)", metric, i, points[i].Time, points[i].Value, x.points[i].Time, x.points[i].Value)
				break
			}
		}
		for i := 1; i < len(points); i++ {
			if points[i].Time <= points[i-1].Time {
				t.Errorf("%s: timestamp %d of point %d does not increase", metric, points[i].Time, i)
				break
			}
		}
		if !x.chunkSpec {
			t.Errorf("%s: the C test gave no chunk expectation", metric)
		}
		if x.exact != nil && fmt.Sprint(sizes) != fmt.Sprint(x.exact) {
			t.Errorf("%s: messages of %v points, expected %v", metric, sizes, x.exact)
		}
		if x.maxChunk > 0 {
			for i, n := range sizes {
				if n < 1 || n > x.maxChunk {
					t.Errorf("%s: message %d has %d points, expected 1..%d", metric, i, n, x.maxChunk)
					break
				}
			}
		}
	}
}

// logWriter streams a child's output into the test log, line by line.
type logWriter struct {
	t    *testing.T
	mu   sync.Mutex
	buf  []byte
	name string
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			return len(p), nil
		}
		w.t.Logf("%s: %s", w.name, w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

// failureURLs prepares the brokers a connect must fail against. Their
// passwords contain "s3cret", which the C test looks for in every error
// text and log line.
func failureURLs(t *testing.T, brokerURL string) []string {
	t.Helper()
	// A port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := l.Addr().String()
	l.Close()

	// A listener that accepts and then says nothing.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var heldMu sync.Mutex
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			heldMu.Lock()
			held = append(held, c)
			heldMu.Unlock()
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		heldMu.Lock()
		for _, c := range held {
			c.Close()
		}
		heldMu.Unlock()
	})

	// The real broker with a wrong password.
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), "wrong-s3cret")
	badPW := u.String()

	// A vhost whose manager has gone: exchanges and the management queue
	// exist, so requests are routed, but nobody answers.
	silentManager := testenv.FreshVhost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gone, err := manager.Start(ctx, manager.Config{URL: silentManager, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("manager on the silent vhost: %v", err)
	}
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	return []string{
		"METRICQ_TEST_REFUSED_URL=amqp://guest:refused-s3cret@" + refused + "/",
		"METRICQ_TEST_BADPW_URL=" + badPW,
		"METRICQ_TEST_SILENT_TCP_URL=amqp://guest:silent-s3cret@" + silent.Addr().String() + "/",
		"METRICQ_TEST_SILENT_MANAGER_URL=" + silentManager,
	}
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// TestC runs tests/c/test_capi.c against a local manager and checks what
// its sink received; then the C examples.
func TestC(t *testing.T) {
	brokerURL := testenv.URL(t)
	build(t)
	testenv.ExclusiveVhost(t) // one manager per vhost among the test binaries
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := manager.Start(ctx, manager.Config{
		URL:    brokerURL,
		Logger: quietLogger(),
		Configs: map[string]map[string]any{
			"ctest-config":            {"rate": 5},
			"source-c-interval-test":  {"rate": 20, "prefix": "example.c.sysinfo"},
			"source-c-minimal-test-1": {},
		},
	})
	if err != nil {
		t.Fatalf("manager: %v", err)
	}
	defer m.Close()
	s := startSink(t, brokerURL)

	t.Run("test_capi", func(t *testing.T) { runCTest(t, m, s, brokerURL) })
	t.Run("examples", func(t *testing.T) { runExamples(t, s, brokerURL) })
}

func runCTest(t *testing.T, m *manager.Manager, s *sink, brokerURL string) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "test_capi")
	compileC(t, exe, "tests/c/test_capi.c")

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(append(os.Environ(), "METRICQ_TEST_URL="+brokerURL, "METRICQ_LOG=warn"), failureURLs(t, brokerURL)...)
	cmd.Stderr = &logWriter{t: t, name: "test_capi"}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exp := expectations{}
	done := false
	scanner := bufio.NewScanner(stdout)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		request, ok := strings.CutPrefix(line, "@@ ")
		if !ok {
			t.Logf("test_capi stdout: %s", line)
			continue
		}
		switch {
		case request == "done":
			done = true
		case strings.HasPrefix(request, "config "):
			answer(t, stdin, pushConfig(m, request))
		case strings.HasPrefix(request, "discover "):
			answer(t, stdin, discover(m, strings.TrimPrefix(request, "discover ")))
		default:
			if err := exp.parse(request); err != nil {
				t.Errorf("bad line from the C test: %q: %v", line, err)
			}
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Errorf("test_capi: %v", err)
	}
	if !done {
		t.Error("test_capi did not finish (no \"@@ done\")")
	}
	want := map[string]int{}
	total := 0
	for metric, x := range exp {
		want[metric] = len(x.points)
		total += len(x.points)
	}
	s.waitFor(want, 60*time.Second)
	t.Logf("checking %d metrics, %d points", len(exp), total)
	exp.verify(t, s.snapshot(), "ctest.")
}

func answer(t *testing.T, w io.Writer, text string) {
	t.Helper()
	text = strings.ReplaceAll(text, "\n", " ")
	if _, err := io.WriteString(w, text+"\n"); err != nil {
		t.Errorf("answering the C test: %v", err)
	}
}

func pushConfig(m *manager.Manager, request string) string {
	f := strings.SplitN(request, " ", 3)
	if len(f) != 3 {
		return "error bad request"
	}
	var args map[string]any
	if err := json.Unmarshal([]byte(f[2]), &args); err != nil {
		return "error bad JSON: " + err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.Call(ctx, f[1], "config", args); err != nil {
		return "error " + err.Error()
	}
	return "ok"
}

func discover(m *manager.Manager, token string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	replies, err := m.Broadcast(ctx, "discover", nil, time.Second)
	if err != nil {
		return "fail " + err.Error()
	}
	for _, r := range replies {
		if r.AppID == token {
			if r.Body["alive"] != true || r.Body["metricqVersion"] != libmetricq.VersionString {
				return fmt.Sprintf("fail reply %v", r.Body)
			}
			return "ok"
		}
	}
	return fmt.Sprintf("fail no reply from %s among %d", token, len(replies))
}
