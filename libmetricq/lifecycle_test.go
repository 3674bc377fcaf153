package libmetricq_test

import (
	"context"
	"errors"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// leftBehind fails the test if the broker still holds a connection of the
// token: a failed or cancelled Connect has closed its own before returning.
func leftBehind(t *testing.T, api *testenv.API, token string) {
	t.Helper()
	if n := api.CountConnections(t, token); n != 0 {
		t.Fatalf("%d connections of %s left open on the broker", n, token)
	}
}

// goroutines counts the running goroutines but the HTTP client's (the
// management API's idle connections come and go on their own), and
// returns their stacks.
func goroutines() (int, string) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	var kept []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "net/http.") {
			count++
			kept = append(kept, g)
		}
	}
	return count, strings.Join(kept, "\n\n")
}

// goroutinesBackTo waits (up to 5 s) until no more goroutines run than
// before, and fails with their stacks if some stay: every goroutine of a
// failed attempt ends, only some of them a moment after Connect returns
// (the client library's socket readers notice the close on their own).
func goroutinesBackTo(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, stacks := goroutines()
		if n <= before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, %d before the connect:\n%s", n, before, stacks)
		}
		time.Sleep(10 * time.Millisecond) // polling a count, not ordering events
	}
}

// One Source through three failed connects (bad credentials, the manager
// refusing the token, the config handler refusing the configuration after
// declaring a metric), then a successful one: each failure leaves nothing
// behind, and the success needs nothing but calling Connect again.
func TestConnectFailsThenSucceedsOnOneSource(t *testing.T) {
	mgr := startManager(t, manager.Config{RequireConfig: true})
	api := testenv.ManagementAPI(t)
	token := testenv.Token(t, "retry")
	user := "libmetricq-" + token
	u, err := url.Parse(testenv.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, "retry-pw")

	refuse := true
	handlerCalls := 0
	handler := func(ctx context.Context, s *libmetricq.Source, config map[string]any) error {
		handlerCalls++
		if err := s.DeclareMetricList(ctx, []string{"retry.m"}); err != nil {
			return err
		}
		if refuse {
			return errors.New("refused by the test")
		}
		return nil
	}
	before, _ := goroutines()
	src, err := libmetricq.NewSource(u.String(), token, libmetricq.WithConfigHandler(handler), libmetricq.WithChunkSize(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopSoon(src) })
	attempt := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		return src.Connect(ctx)
	}

	// The user does not exist yet.
	if err := attempt(); !errors.Is(err, libmetricq.ErrConnect) {
		t.Fatalf("bad credentials: %v", err)
	}
	leftBehind(t, api, token)
	goroutinesBackTo(t, before)

	api.CreateUser(t, user, "retry-pw")
	// The manager has no configuration for the token.
	if err := attempt(); !errors.Is(err, libmetricq.ErrRPC) || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("register refused: %v", err)
	}
	leftBehind(t, api, token)
	goroutinesBackTo(t, before)

	mgr.SetConfig(token, map[string]any{"rate": 1})
	if err := attempt(); err == nil || !strings.Contains(err.Error(), "refused by the test") || handlerCalls != 1 {
		t.Fatalf("config refused: %v (handler called %d times)", err, handlerCalls)
	}
	// The declaration made under the failed registration is undone.
	if names := src.DeclaredMetrics(); len(names) != 0 {
		t.Fatalf("declared after a failed connect: %v", names)
	}
	if err := src.Send(context.Background(), "retry.m", ts(0), 0); !errors.Is(err, libmetricq.ErrInvalid) || !strings.Contains(err.Error(), "not connected") {
		t.Fatalf("send after a failed connect: %v", err)
	}
	leftBehind(t, api, token)
	goroutinesBackTo(t, before)
	if src.Connected() || src.Stopped() {
		t.Fatalf("after failed connects: connected %v, stopped %v", src.Connected(), src.Stopped())
	}

	refuse = false
	if err := attempt(); err != nil {
		t.Fatalf("connect after the failures: %v", err)
	}
	if !src.Connected() || handlerCalls != 2 {
		t.Fatalf("connected %v, handler called %d times", src.Connected(), handlerCalls)
	}
	if err := attempt(); !errors.Is(err, libmetricq.ErrInvalid) || !strings.Contains(err.Error(), "already connected") {
		t.Fatalf("second connect: %v", err)
	}
	sink := rawSink(t, testenv.URL(t), "retry.m")
	for i := range 4 {
		if err := src.Send(context.Background(), "retry.m", ts(i), float64(i)); err != nil {
			t.Fatal(err)
		}
	}
	expectPoints(t, next(t, sink), "retry.m", 0, 2)
	expectPoints(t, next(t, sink), "retry.m", 2, 2)
	if n := api.CountConnections(t, token); n != 2 {
		t.Fatalf("%d connections of the connected source, want management and data", n)
	}
	if st := src.Stats(); st.PointsDropped != 0 || st.PointsAccepted != 4 {
		t.Fatalf("stats: %+v", st)
	}
}

// A Connect cancelled while it waits for the manager returns at once and
// has closed its connection and ended its goroutines; the next Connect of
// the same Source then succeeds.
func TestCancelledConnectLeavesNothing(t *testing.T) {
	// A manager that ran once and is gone: register waits in its queue.
	mgr := startManager(t, manager.Config{})
	mgr.Close()
	api := testenv.ManagementAPI(t)
	token := testenv.Token(t, "cancel")
	before, _ := goroutines()
	src, err := libmetricq.NewSource(testenv.URL(t), token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopSoon(src) })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	result := make(chan error, 1)
	go func() { result <- src.Connect(ctx) }()
	// Cancel once the attempt holds its management connection.
	deadline := time.Now().Add(waitLimit)
	for api.CountConnections(t, token) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the connect never opened its management connection")
		}
	}
	cancel()
	begin := time.Now()
	select {
	case err := <-result:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled connect: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled connect did not return within 5 s")
	}
	t.Logf("the cancelled connect returned after %v", time.Since(begin))
	leftBehind(t, api, token)
	goroutinesBackTo(t, before)

	startManager(t, manager.Config{})
	ctx2, cancel2 := context.WithTimeout(context.Background(), waitLimit)
	defer cancel2()
	if err := src.Connect(ctx2); err != nil {
		t.Fatalf("connect after a cancelled one: %v", err)
	}
	if err := src.DeclareMetricList(ctx2, []string{"cancel.m"}); err != nil {
		t.Fatal(err)
	}
}

// Stop during a Connect cancels it; the Source stays stopped.
func TestStopDuringConnect(t *testing.T) {
	mgr := startManager(t, manager.Config{})
	mgr.Close()
	api := testenv.ManagementAPI(t)
	token := testenv.Token(t, "stopconnect")
	src, err := libmetricq.NewSource(testenv.URL(t), token)
	if err != nil {
		t.Fatal(err)
	}
	result := make(chan error, 1)
	go func() { result <- src.Connect(context.Background()) }()
	deadline := time.Now().Add(waitLimit)
	for api.CountConnections(t, token) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the connect never opened its management connection")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := src.Stop(ctx); err != nil {
		t.Fatalf("stop during connect: %v", err)
	}
	if err := <-result; !errors.Is(err, libmetricq.ErrStopped) {
		t.Fatalf("connect cut short by stop: %v", err)
	}
	leftBehind(t, api, token)
	if err := src.Connect(ctx); !errors.Is(err, libmetricq.ErrStopped) {
		t.Fatalf("connect after stop: %v", err)
	}
}

// Settings made before Connect hold for the connection: the buffer bound
// and chunk sizes, each checked against the other.
func TestSettingsBeforeConnect(t *testing.T) {
	src, err := libmetricq.NewSource("amqp://127.0.0.1/", "settings-test")
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Configure(libmetricq.WithMaxBufferedPoints(10)); err != nil || src.MaxBufferedPoints() != 10 {
		t.Fatalf("Configure(WithMaxBufferedPoints): %v, bound %d", err, src.MaxBufferedPoints())
	}
	if err := src.SetChunkSize(11); !errors.Is(err, libmetricq.ErrInvalid) || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("chunk size above the bound: %v", err)
	}
	if err := src.SetMetricChunkSize("a.b", 8); err != nil {
		t.Fatal(err)
	}
	if err := src.Configure(libmetricq.WithMaxBufferedPoints(7)); !errors.Is(err, libmetricq.ErrInvalid) || !strings.Contains(err.Error(), "a.b") {
		t.Fatalf("bound below a metric's chunk size: %v", err)
	}
	if err := src.Configure(libmetricq.WithMaxBufferedPoints(0)); !errors.Is(err, libmetricq.ErrInvalid) {
		t.Fatalf("bound 0: %v", err)
	}
	if _, err := libmetricq.NewSource("amqp://127.0.0.1/", "settings-test", libmetricq.WithChunkSize(5), libmetricq.WithMaxBufferedPoints(4)); !errors.Is(err, libmetricq.ErrInvalid) {
		t.Fatalf("options: chunk size above the bound: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := src.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.Configure(libmetricq.WithMaxBufferedPoints(20)); !errors.Is(err, libmetricq.ErrStopped) {
		t.Fatalf("bound after stop: %v", err)
	}
}
