package syncsource

import (
	"context"
	"errors"
	"net"
	"net/url"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// env is a manager on the test vhost and a sink subscribed to everything.
type env struct {
	url string
	m   *manager.Manager
	sub *manager.Subscription
}

// one manager per vhost: tests that start one run one at a time.
var managerMu sync.Mutex

func start(t *testing.T, configs map[string]map[string]any) *env {
	t.Helper()
	url := testenv.URL(t)
	testenv.ExclusiveVhost(t) // one manager per vhost among the test binaries
	managerMu.Lock()
	t.Cleanup(managerMu.Unlock)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := manager.Start(ctx, manager.Config{URL: url, Configs: configs, Logger: newLogger(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	sub, err := manager.Subscribe(ctx, url, testenv.Token(t, "sink"), []string{"#"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return &env{url: url, m: m, sub: sub}
}

// receive collects chunks of metric until it has n points.
func (e *env) receive(t *testing.T, metric string, n int) [][]libmetricq.Point {
	t.Helper()
	var chunks [][]libmetricq.Point
	got := 0
	timeout := time.After(20 * time.Second)
	for got < n {
		select {
		case c := <-e.sub.Chunks():
			if c.Metric == metric {
				chunks = append(chunks, c.Points)
				got += len(c.Points)
			}
		case <-timeout:
			t.Fatalf("%s: %d of %d points received", metric, got, n)
		}
	}
	return chunks
}

func sizes(chunks [][]libmetricq.Point) []int {
	out := make([]int, len(chunks))
	for i, c := range chunks {
		out[i] = len(c)
	}
	return out
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSourceFlow(t *testing.T) {
	e := start(t, nil)
	s, err := New(e.url, testenv.Token(t, "source"))
	if err != nil {
		t.Fatal(err)
	}
	const metric = "syncsource.flow"
	if err := s.Send(metric, 1, 1, time.Second); Status(err) != StatusInvalid {
		t.Errorf("send before connect: %v", err)
	}
	if err := s.SetChunkSize(ptr(metric), 3); err != nil {
		t.Fatal(err)
	}
	if err := s.Connect(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.Connect(time.Second); Status(err) != StatusInvalid {
		t.Errorf("second connect: %v", err)
	}
	if err := s.Send(metric, 1, 1, time.Second); Status(err) != StatusUndeclared {
		t.Errorf("send before declare: %v", err)
	}
	if err := s.Declare(map[string]libmetricq.Metadata{metric: {"unit": "s"}}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		if err := s.Send(metric, int64(100+i), float64(i), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Send(metric, 100, 0, time.Second); Status(err) != StatusOrder {
		t.Errorf("out of order: %v", err)
	}
	if err := s.Flush(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.PointsAccepted != 7 || st.PointsConfirmed != 7 || st.BufferedPoints != 0 {
		t.Errorf("stats after flush: %+v", st)
	}
	if err := s.SendBatch(metric, []libmetricq.Timestamp{200, 201, 202}, []float64{7, 8, 9}, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(10*time.Second, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(time.Second, false); err != nil {
		t.Errorf("second stop: %v", err)
	}
	for _, err := range []error{
		s.Send(metric, 300, 0, time.Second),
		s.Flush(time.Second),
		s.Declare(map[string]libmetricq.Metadata{"x.y": nil}, time.Second),
		s.SetChunkSize(nil, 5),
		s.SetPeriod(1),
		s.Connect(time.Second),
	} {
		if Status(err) != StatusStopped {
			t.Errorf("after stop: %v", err)
		}
	}
	if _, err := s.Config(); Status(err) != StatusStopped {
		t.Errorf("config after stop: %v", err)
	}
	chunks := e.receive(t, metric, 10)
	if !equalInts(sizes(chunks), []int{3, 3, 1, 3}) {
		t.Errorf("chunk sizes %v", sizes(chunks))
	}
	var values []float64
	for _, c := range chunks {
		for _, p := range c {
			values = append(values, p.Value)
		}
	}
	for i, v := range values {
		if v != float64(i) {
			t.Errorf("values %v", values)
			break
		}
	}
}

func ptr(s string) *string { return &s }

// silentListener accepts TCP connections and never answers.
func silentListener(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return "amqp://guest:silent-s3cret@" + l.Addr().String() + "/"
}

func TestConnectFailures(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "amqp://guest:refused-s3cret@" + l.Addr().String() + "/"
	l.Close()
	s, err := New(refused, "syncsource-refused")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // a failed connect may be retried
		err := s.Connect(5 * time.Second)
		if Status(err) != StatusConnect || strings.Contains(s.ErrorText(err), "s3cret") {
			t.Errorf("refused: %d %s", Status(err), s.ErrorText(err))
		}
	}
	if st := s.Stats(); st != (libmetricq.Stats{}) {
		t.Errorf("stats of an unconnected source: %+v", st)
	}

	silent, err := New(silentListener(t), "syncsource-silent")
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	err = silent.Connect(300 * time.Millisecond)
	// Usually the dial's own error (CONNECT) comes first; on a loaded
	// machine the caller's timer may win (TIMEOUT). Both are right.
	if took := time.Since(begin); took > 700*time.Millisecond || Status(err) != StatusConnect && Status(err) != StatusTimeout {
		t.Errorf("silent: %v after %v (status %d)", err, took, Status(err))
	}

	// Stop during a connect: the connect ends at once, stopped.
	silent2, err := New(silentListener(t), "syncsource-silent2")
	if err != nil {
		t.Fatal(err)
	}
	result := make(chan error, 1)
	begin = time.Now()
	go func() { result <- silent2.Connect(20 * time.Second) }()
	time.Sleep(100 * time.Millisecond)
	if err := silent2.Stop(5*time.Second, false); err != nil {
		t.Errorf("stop while connecting: %v", err)
	}
	if err := <-result; Status(err) != StatusStopped || time.Since(begin) > 3*time.Second {
		t.Errorf("connect interrupted by stop: %v after %v", err, time.Since(begin))
	}
	if err := silent2.Connect(time.Second); Status(err) != StatusStopped {
		t.Errorf("connect after stop: %v", err)
	}
}

func TestRunInterval(t *testing.T) {
	e := start(t, nil)
	newSource := func(metric string) *Source {
		s, err := New(e.url, testenv.Token(t, "interval"))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.RunInterval(0.01, func() int { return 0 }); Status(err) != StatusInvalid {
			t.Errorf("run before connect: %v", err)
		}
		if err := s.Connect(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		if err := s.Declare(map[string]libmetricq.Metadata{metric: nil}, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		return s
	}

	// The update stops the source from inside (no deadlock) in round 4.
	s := newSource("syncsource.interval.a")
	var rounds int
	// Deadlines pass before the update is attached (2.5 periods): they must
	// not be warned about. (A loaded machine may miss a later one, really.)
	time.Sleep(250 * time.Millisecond)
	c := capture(t)
	attached := time.Now()
	err := s.RunInterval(0.1, func() int {
		rounds++
		if err := s.Send("syncsource.interval.a", int64(libmetricq.Now()), float64(rounds), time.Second); err != nil {
			t.Error(err)
		}
		if rounds == 4 {
			if err := s.Stop(5*time.Second, true); err != nil {
				t.Errorf("stop from update: %v", err)
			}
		}
		return 0
	})
	if err != nil || rounds != 4 {
		t.Errorf("RunInterval: %v after %d rounds", err, rounds)
	}
	for _, deadline := range regexp.MustCompile(`missed deadlines.* deadline=(\S+)`).FindAllStringSubmatch(c.all(), -1) {
		at, err := time.Parse(time.RFC3339Nano, deadline[1])
		if err != nil || at.Before(attached) {
			t.Errorf("warned about a deadline before the update was attached at %v: %s", attached, c.all())
		}
	}
	if len(e.receive(t, "syncsource.interval.a", 4)) != 4 {
		t.Error("not one chunk per round")
	}

	// A non-zero update result stops the source; MQ_ERR_PUBLISH does not.
	s = newSource("syncsource.interval.b")
	rounds = 0
	err = s.RunInterval(0.01, func() int {
		rounds++
		switch rounds {
		case 1:
			return StatusPublish
		case 3:
			return 42
		}
		return 0
	})
	var hook *HookError
	if !errors.As(err, &hook) || hook.Code != 42 || Status(err) != StatusStopped || rounds != 3 {
		t.Errorf("RunInterval: %v (status %d) after %d rounds", err, Status(err), rounds)
	}
	if err := s.RunInterval(0.01, func() int { return 0 }); Status(err) != StatusStopped {
		t.Errorf("run after stop: %v", err)
	}

	// Stopped from another goroutine; a second RunInterval is refused.
	s = newSource("syncsource.interval.c")
	var n atomic.Int32
	go func() {
		time.Sleep(100 * time.Millisecond)
		if err := s.RunInterval(0.01, func() int { return 0 }); Status(err) != StatusInvalid {
			t.Errorf("second RunInterval: %v", err)
		}
		s.Close(false, false)
	}()
	if err := s.RunInterval(0.01, func() int { n.Add(1); return 0 }); err != nil || n.Load() < 2 {
		t.Errorf("RunInterval: %v after %d rounds", err, n.Load())
	}
}

func TestConfigHook(t *testing.T) {
	token := "syncsource-config"
	e := start(t, map[string]map[string]any{token: {"rate": 5}})
	s, err := New(e.url, token)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string
	refuse := true
	s.SetConfigHook(func(config []byte) int {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, string(config))
		if refuse || strings.Contains(string(config), "refuse") {
			return 7
		}
		if err := s.Declare(map[string]libmetricq.Metadata{"syncsource.config": nil}, 5*time.Second); err != nil {
			t.Errorf("declare from the hook: %v", err)
		}
		return 0
	})
	if err := s.Connect(10 * time.Second); Status(err) != StatusRPC || !strings.Contains(err.Error(), "returned 7") {
		t.Errorf("refused config: %v", err)
	}
	mu.Lock()
	refuse = false
	mu.Unlock()
	if err := s.Connect(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.m.Call(ctx, token, "config", map[string]any{"rate": 6}); err != nil {
		t.Errorf("config push: %v", err)
	}
	var callErr *manager.CallError
	if _, err := e.m.Call(ctx, token, "config", map[string]any{"refuse": true}); !errors.As(err, &callErr) {
		t.Errorf("refused config push: %v", err)
	}
	mu.Lock()
	if len(seen) != 4 || !strings.Contains(seen[1], `"rate":5`) || !strings.Contains(seen[2], `"rate":6`) {
		t.Errorf("hook saw %q", seen)
	}
	mu.Unlock()
	text, err := s.Config()
	if err != nil || !strings.Contains(string(text), `"refuse":true`) {
		t.Errorf("Config: %s, %v", text, err)
	}
	if err := s.Send("syncsource.config", 1, 1, time.Second); err != nil {
		t.Error(err)
	}
	s.Close(false, false)
	e.receive(t, "syncsource.config", 1)

	// Freed from inside the hook while connecting.
	s2, err := New(e.url, testenv.Token(t, "config-free"))
	if err != nil {
		t.Fatal(err)
	}
	s2.SetConfigHook(func([]byte) int { s2.Close(false, true); return 0 })
	if err := s2.Connect(10 * time.Second); Status(err) != StatusStopped {
		t.Errorf("connect of a source freed in its hook: %v", err)
	}
}

func TestBoundedBuffer(t *testing.T) {
	e := start(t, nil)
	s, err := New(e.url, testenv.Token(t, "buffer"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetChunkSize(nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMaxBuffered(2); err != nil {
		t.Fatal(err)
	}
	if err := s.SetChunkSize(nil, 3); Status(err) != StatusInvalid {
		t.Errorf("chunk size above the buffer: %v", err)
	}
	if err := s.Connect(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMaxBuffered(5); Status(err) != StatusInvalid {
		t.Errorf("buffer after connect: %v", err)
	}
	const metric = "syncsource.buffer"
	if err := s.Declare(map[string]libmetricq.Metadata{metric: nil}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := s.Send(metric, int64(i+1), 0, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Send(metric, 3, 0, 50*time.Millisecond); Status(err) != StatusTimeout {
		t.Errorf("full: %v", err)
	}
	if st := s.Stats(); st.BufferFullWaits != 1 || st.BufferedPoints != 2 {
		t.Errorf("stats: %+v", st)
	}
	blocked := make(chan error, 1)
	begin := time.Now()
	go func() { blocked <- s.Send(metric, 3, 0, 30*time.Second) }()
	for s.Stats().BufferFullWaits < 2 { // the Send waits for space now
		runtime.Gosched()
	}
	if err := s.Stop(10*time.Second, false); err != nil {
		t.Fatal(err)
	}
	if err := <-blocked; Status(err) != StatusStopped || time.Since(begin) > 5*time.Second {
		t.Errorf("send blocked during stop: %v after %v", err, time.Since(begin))
	}
	if chunks := e.receive(t, metric, 2); !equalInts(sizes(chunks), []int{2}) {
		t.Errorf("chunks %v", sizes(chunks))
	}
}

// One core from New to Close: settings made before connecting survive
// failed connects (bad credentials, here) and hold once connected.
func TestOneCoreAcrossFailedConnects(t *testing.T) {
	e := start(t, nil)
	api := testenv.ManagementAPI(t)
	token := testenv.Token(t, "onecore")
	user := "libmetricq-" + token
	u, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, "onecore-s3cret")
	s, err := New(u.String(), token)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(false, false)
	core := s.core
	metric := "syncsource.onecore"
	if err := s.SetMaxBuffered(50); err != nil {
		t.Fatal(err)
	}
	if err := s.SetChunkSize(nil, 5); err != nil {
		t.Fatal(err)
	}
	if err := s.SetChunkSize(&metric, 3); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the user does not exist yet
		if err := s.Connect(10 * time.Second); Status(err) != StatusConnect || strings.Contains(s.ErrorText(err), "s3cret") {
			t.Fatalf("bad credentials: %d %s", Status(err), s.ErrorText(err))
		}
		if n := api.CountConnections(t, token); n != 0 {
			t.Fatalf("%d connections left by a failed connect", n)
		}
	}
	api.CreateUser(t, user, "onecore-s3cret")
	if err := s.Connect(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if s.core != core {
		t.Fatal("the connect made another core")
	}
	if got := core.MaxBufferedPoints(); got != 50 {
		t.Errorf("buffer bound %d, want 50", got)
	}
	if err := s.SetMaxBuffered(60); Status(err) != StatusInvalid {
		t.Errorf("buffer bound set after connecting: %v", err)
	}
	if got := core.ChunkSize(); got != 5 {
		t.Errorf("default chunk size %d, want 5", got)
	}
	if err := s.Declare(map[string]libmetricq.Metadata{metric: nil}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if err := s.Send(metric, int64(i+1), float64(i), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if got := sizes(e.receive(t, metric, 6)); !equalInts(got, []int{3, 3}) {
		t.Errorf("chunks %v, want the chunk size set before the failed connects", got)
	}
}
