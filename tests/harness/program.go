package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// Env is a local manager and a sink on the test broker.
type Env struct {
	URL     string
	Manager *manager.Manager
	Sink    *Sink
}

// QuietLogger logs errors only.
func QuietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// Start takes the vhost lock, then starts a manager with configs (token ->
// configuration) and a sink subscribed to every metric; both end with the
// test.
func Start(t *testing.T, configs map[string]map[string]any) *Env {
	t.Helper()
	testenv.ExclusiveVhost(t)
	u := testenv.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := manager.Start(ctx, manager.Config{URL: u, Logger: QuietLogger(), Configs: configs})
	if err != nil {
		t.Fatalf("manager: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return &Env{URL: u, Manager: m, Sink: startSink(t, u)}
}

// Sink records every data message the manager routes to it.
type Sink struct {
	mu      sync.Mutex
	chunks  map[string][][]libmetricq.Point // metric -> messages, in arrival order
	changed chan struct{}
}

func startSink(t *testing.T, brokerURL string) *Sink {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub, err := manager.SubscribeWith(ctx, brokerURL, fmt.Sprintf("sink-bindings-%d", time.Now().UnixNano()),
		[]string{"#"}, manager.SubscribeOptions{Buffer: 4096, Logger: QuietLogger()})
	if err != nil {
		t.Fatalf("sink: %v", err)
	}
	s := &Sink{chunks: map[string][][]libmetricq.Point{}, changed: make(chan struct{}, 1)}
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

// Count is the number of points received for metric.
func (s *Sink) Count(metric string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.chunks[metric] {
		n += len(c)
	}
	return n
}

// Snapshot is a copy of what was received, metric -> messages.
func (s *Sink) Snapshot() map[string][][]libmetricq.Point {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][][]libmetricq.Point, len(s.chunks))
	for k, v := range s.chunks {
		out[k] = append([][]libmetricq.Point(nil), v...)
	}
	return out
}

// WaitFor waits until every metric has at least want[metric] points, then
// a little longer (settle), so that duplicates and strays have time to show.
func (s *Sink) WaitFor(want map[string]int, timeout, settle time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		missing := false
		for metric, n := range want {
			if s.Count(metric) < n {
				missing = true
				break
			}
		}
		if !missing {
			break
		}
		select {
		case <-s.changed:
		case <-time.After(50 * time.Millisecond):
		}
	}
	time.Sleep(settle)
}

// expectation is what the program says a metric must receive.
type expectation struct {
	points    []expectedPoint
	exact     []int // message sizes, if given
	maxChunk  int   // every message 1..maxChunk points, if > 0
	chunkSpec bool
}

type expectedPoint struct {
	tmin, tmax libmetricq.Timestamp
	value      float64
}

// Expectations are what a program announced, metric -> expectation.
type Expectations map[string]*expectation

func (e Expectations) get(metric string) *expectation {
	if e[metric] == nil {
		e[metric] = &expectation{}
	}
	return e[metric]
}

func parseFloats(fields ...string) ([]float64, error) {
	out := make([]float64, len(fields))
	for i, f := range fields {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func parseInts(fields ...string) ([]int64, error) {
	out := make([]int64, len(fields))
	for i, f := range fields {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// parse reads one expectation line (without "@@ ").
func (e Expectations) parse(line string) error {
	f := strings.Fields(line)
	if len(f) < 2 {
		return fmt.Errorf("unknown expectation %q", line)
	}
	switch {
	case f[0] == "point" && len(f) == 4:
		t, err := parseInts(f[2])
		if err != nil {
			return err
		}
		v, err := parseFloats(f[3])
		if err != nil {
			return err
		}
		x := e.get(f[1])
		x.points = append(x.points, expectedPoint{libmetricq.Timestamp(t[0]), libmetricq.Timestamp(t[0]), v[0]})
	case f[0] == "between" && len(f) == 5:
		t, err := parseInts(f[2], f[3])
		if err != nil {
			return err
		}
		v, err := parseFloats(f[4])
		if err != nil {
			return err
		}
		x := e.get(f[1])
		x.points = append(x.points, expectedPoint{libmetricq.Timestamp(t[0]), libmetricq.Timestamp(t[1]), v[0]})
	case f[0] == "seq" && len(f) == 7:
		n, err := parseInts(f[2], f[3], f[4])
		if err != nil {
			return err
		}
		v, err := parseFloats(f[5], f[6])
		if err != nil {
			return err
		}
		x := e.get(f[1])
		for i := range n[0] {
			t := libmetricq.Timestamp(n[1] + i*n[2])
			x.points = append(x.points, expectedPoint{t, t, v[0] + float64(i)*v[1]})
		}
	case f[0] == "chunks" && len(f) == 4 && f[2] == "exact":
		x := e.get(f[1])
		x.chunkSpec, x.exact = true, nil
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

// Want is the number of points per metric, for Sink.WaitFor.
func (e Expectations) Want() map[string]int {
	want := map[string]int{}
	for metric, x := range e {
		want[metric] = len(x.points)
	}
	return want
}

func sameValue(a, b float64) bool {
	return math.Float64bits(a) == math.Float64bits(b) || (math.IsNaN(a) && math.IsNaN(b))
}

// Verify compares what the sink got for the metrics starting with prefix.
func (e Expectations) Verify(t testing.TB, got map[string][][]libmetricq.Point, prefix string) {
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
			p, w := points[i], x.points[i]
			if p.Time < w.tmin || p.Time > w.tmax || !sameValue(p.Value, w.value) {
				t.Errorf("%s: point %d is (%d, %v), expected (%d..%d, %v)", metric, i, p.Time, p.Value, w.tmin, w.tmax, w.value)
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
			t.Errorf("%s: the program gave no chunk expectation", metric)
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

// RefusedURL is an AMQP URL on a local port nobody listens on, with a
// password containing "s3cret" (which no error text may show).
func RefusedURL(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "amqp://guest:refused-s3cret@" + addr + "/"
}

// RunProgram runs a test program speaking the protocol, answers its
// requests, waits for the sink to receive what it announced and verifies
// the metrics starting with prefix. env is added to the program's
// environment (METRICQ_TEST_URL is always set).
func (e *Env) RunProgram(t *testing.T, timeout time.Duration, prefix string, env []string, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	proxy, proxyURL := testenv.NewFaultProxy(t, e.URL)
	cmd.Env = append(append(os.Environ(), testenv.EnvURL+"="+e.URL, "METRICQ_TEST_PROXY_URL="+proxyURL, "METRICQ_LOG=warn"), env...)
	logw := &LogWriter{T: t, Name: filepath.Base(name)}
	defer logw.Flush()
	cmd.Stderr = logw
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
	exp := Expectations{}
	done := false
	scanner := bufio.NewScanner(stdout)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		request, ok := strings.CutPrefix(strings.TrimSpace(line), "@@ ")
		if !ok {
			t.Logf("%s stdout: %s", filepath.Base(name), line)
			continue
		}
		request = strings.TrimSpace(request)
		switch {
		case request == "done":
			done = true
		case strings.HasPrefix(request, "config "):
			answer(t, stdin, e.pushConfig(request))
		case request == "cut":
			proxy.SetUnreachable(true)
			answer(t, stdin, "ok")
		case strings.HasPrefix(request, "discover "):
			answer(t, stdin, e.discover(strings.TrimPrefix(request, "discover ")))
		default:
			if err := exp.parse(request); err != nil {
				t.Errorf("bad line from %s: %q: %v", name, line, err)
			}
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Errorf("%s: %v", name, err)
	}
	if !done {
		t.Errorf("%s did not finish (no \"@@ done\")", name)
	}
	e.Sink.WaitFor(exp.Want(), 30*time.Second, 300*time.Millisecond)
	total := 0
	for _, n := range exp.Want() {
		total += n
	}
	t.Logf("checking %d metrics, %d points", len(exp), total)
	exp.Verify(t, e.Sink.Snapshot(), prefix)
}

func answer(t *testing.T, w io.Writer, text string) {
	t.Helper()
	text = strings.ReplaceAll(text, "\n", " ")
	if _, err := io.WriteString(w, text+"\n"); err != nil {
		t.Errorf("answering the test program: %v", err)
	}
}

func (e *Env) pushConfig(request string) string {
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
	if _, err := e.Manager.Call(ctx, f[1], "config", args); err != nil {
		return "error " + err.Error()
	}
	return "ok"
}

func (e *Env) discover(token string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	replies, err := e.Manager.Broadcast(ctx, "discover", nil, time.Second)
	if err != nil {
		return "fail " + err.Error()
	}
	for _, r := range replies {
		if r.AppID == token {
			if r.Body["alive"] != true || r.Body["metricqVersion"] != libmetricq.VersionString {
				return fmt.Sprintf("fail reply %v", r.Body)
			}
			if v, ok := r.Body["version"]; ok {
				return fmt.Sprintf("ok version=%v", v)
			}
			return "ok"
		}
	}
	return fmt.Sprintf("fail no reply from %s among %d", token, len(replies))
}
