package libmetricq_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// Fault tests against the real broker. A sink with a durable quorum queue
// checks that every accepted point arrives, in order per metric. The only
// repeats it tolerates are whole chunks published again after a lost
// connection, each an exact copy of a chunk that arrived before (see
// docs/reliability.md for why those can happen and how a sink drops them).

const (
	streamEvery = time.Millisecond // per metric: about 900 points/s
	sendTimeout = 2 * time.Second
)

// Force-closes the source's connections (data, management, both) while it
// streams, several times: nothing accepted is lost, order holds, metadata
// is declared again, and only republished chunks may repeat.
func TestFaultForcedCloseLosesNothing(t *testing.T) {
	mgr := startManager(t, manager.Config{})
	url := testenv.URL(t)
	api := testenv.ManagementAPI(t)
	token := testenv.Token(t, "source")
	metrics := []string{"fault.close.a", "fault.close.b"}
	sink := newDurableSink(t, url, metrics...)
	var rep republished
	var logs logBuffer
	src := connect(t, token, libmetricq.WithChunkSize(10), rep.hook(), libmetricq.WithLogger(logs.logger()))
	ctx := context.Background()
	if err := src.DeclareMetrics(ctx, map[string]libmetricq.Metadata{metrics[0]: {"unit": "W"}, metrics[1]: {"unit": "V"}}); err != nil {
		t.Fatal(err)
	}
	st := startStream(t, src, metrics, streamEvery, sendTimeout)

	closes := []struct {
		which      string
		data, mgmt uint64
	}{
		{"connection " + token, 1, 1}, // both
		{"data connection " + token, 1, 0},
		{"management connection " + token, 0, 1},
		{"connection " + token, 1, 1},
	}
	for _, c := range closes {
		st.flowing(t, 200)
		waitUntil(t, 10*time.Second, "both connections up", connected(src))
		before := src.Stats()
		if n := api.CloseConnections(t, c.which, int(c.data+c.mgmt), 10*time.Second); n != int(c.data+c.mgmt) {
			t.Fatalf("closed %d connections matching %q, want %d", n, c.which, c.data+c.mgmt)
		}
		waitUntil(t, 10*time.Second, "the source to reconnect", func() bool {
			st := src.Stats()
			return st.Reconnects >= before.Reconnects+c.data && st.ManagementReconnects >= before.ManagementReconnects+c.mgmt
		})
	}
	waitUntil(t, 10*time.Second, "both connections up", connected(src))
	st.flowing(t, 200)
	want, total := st.finish(t)
	flushCtx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	if err := src.Flush(flushCtx); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(t, want, waitLimit)
	repeats := sink.verify(t, want, &rep)

	stats := src.Stats()
	if stats.PointsAccepted != uint64(total) || stats.PointsConfirmed != uint64(total) || stats.BufferedPoints != 0 || stats.PointsDropped != 0 {
		t.Fatalf("stats %+v, %d accepted", stats, total)
	}
	if stats.Reconnects < 3 || stats.ManagementReconnects < 3 {
		t.Fatalf("want 3 data and 3 management reconnects: %+v", stats)
	}
	if uint64(repeats) > stats.ChunksRepublished {
		t.Fatalf("%d repeats but only %d chunks republished", repeats, stats.ChunksRepublished)
	}
	t.Logf("%d points in %d chunks; %d chunks republished after 3 data-connection losses, %d of them reached the sink twice",
		total, stats.ChunksConfirmed, stats.ChunksRepublished, repeats)
	mustContain(t, "the log", logs.String(), "data connection lost, reconnecting", "management connection restored")

	// The management link works: metadata was kept, new declarations and
	// discover are answered.
	if err := src.DeclareMetricList(ctx, []string{"fault.close.later"}); err != nil {
		t.Fatal(err)
	}
	if md := mgr.Metadata(); md[metrics[0]]["unit"] != "W" || md["fault.close.later"] == nil {
		t.Fatalf("metadata at the manager: %v", md)
	}
}

// The broker closes only a channel (a channel error), not the connection:
// the source notices, reconnects and carries on.
func TestFaultChannelClosedByBroker(t *testing.T) {
	mgr := startManager(t, manager.Config{})
	token := testenv.Token(t, "source")
	metrics := []string{"fault.channel.a"}
	sink := newDurableSink(t, testenv.URL(t), metrics...)
	var rep republished
	src := connect(t, token, libmetricq.WithChunkSize(5), rep.hook())
	ctx := context.Background()
	if err := src.DeclareMetricList(ctx, metrics); err != nil {
		t.Fatal(err)
	}
	st := startStream(t, src, metrics, streamEvery, sendTimeout)
	st.flowing(t, 200)
	if err := src.BreakDataChannel(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "a data reconnect", func() bool { return src.Stats().Reconnects >= 1 })
	st.flowing(t, 200)
	if err := src.BreakManagementChannel(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "a management reconnect", func() bool { return src.Stats().ManagementReconnects >= 1 })
	st.flowing(t, 200)
	want, _ := st.finish(t)
	flushCtx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	if err := src.Flush(flushCtx); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(t, want, waitLimit)
	sink.verify(t, want, &rep)
	replies, err := mgr.Broadcast(flushCtx, "discover", nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	answered := false
	for _, r := range replies {
		answered = answered || r.AppID == token
	}
	if !answered {
		t.Fatal("no discover reply after the management channel was restored")
	}
}

// The source's user is deleted (the broker closes its connections and
// refuses new ones): a small buffer fills, Send waits its timeout and fails
// without accepting the point; the full buffer shows in the stats and the
// log. Once the user is back everything accepted arrives.
func TestFaultOutageFillsBuffer(t *testing.T) {
	startManager(t, manager.Config{})
	api := testenv.ManagementAPI(t)
	token := testenv.Token(t, "source")
	user := token
	userURL := api.CreateUser(t, user, "outage-pw")
	metrics := []string{"fault.outage.a"}
	sink := newDurableSink(t, testenv.URL(t), metrics...)
	var logs logBuffer
	src, err := libmetricq.NewSource(userURL, token, libmetricq.WithChunkSize(10), libmetricq.WithMaxBufferedPoints(200), libmetricq.WithLogger(logs.logger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := src.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopSoon(src) })
	if err := src.DeclareMetricList(ctx, metrics); err != nil {
		t.Fatal(err)
	}
	st := startStream(t, src, metrics, streamEvery, 100*time.Millisecond)
	st.flowing(t, 200)

	api.Revoke(t, user)
	api.CloseConnections(t, "connection "+token, 2, 10*time.Second)
	waitUntil(t, 10*time.Second, "Sends to time out on the full buffer", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.timeouts >= 3
	})
	stats := src.Stats()
	if stats.DataConnected || stats.BufferFullWaits == 0 || stats.BufferFullTimeouts < 3 || stats.BufferedPoints != 200 {
		t.Fatalf("during the outage: %+v", stats)
	}
	waitUntil(t, 10*time.Second, "a failed reconnect in the log", func() bool {
		return strings.Contains(logs.String(), "data connection failed, retrying")
	})
	mustContain(t, "the log", logs.String(), "buffer full", "access to vhost")

	api.Permit(t, user)
	waitUntil(t, 15*time.Second, "the source to reconnect", connected(src))
	st.flowing(t, 200)
	want, total := st.finish(t)
	if err := src.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(t, want, waitLimit)
	sink.verify(t, want, nil)
	stats = src.Stats()
	if stats.PointsAccepted != uint64(total) || stats.PointsConfirmed != uint64(total) || stats.PointsDropped != 0 {
		t.Fatalf("after the outage: %+v, %d accepted", stats, total)
	}
}

// A reconnect that never succeeds ends the source with ErrConnect and the
// reason; every later call says so; Stop returns at once.
func TestFaultReconnectGivesUp(t *testing.T) {
	startManager(t, manager.Config{})
	api := testenv.ManagementAPI(t)
	token := testenv.Token(t, "source")
	userURL := api.CreateUser(t, token, "gives-up-pw")
	src, err := libmetricq.NewSource(userURL, token, libmetricq.WithChunkSize(100), libmetricq.WithReconnectTimeout(time.Second),
		libmetricq.WithLogger(slogDiscard()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := src.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.DeclareMetricList(ctx, []string{"fault.gives-up"}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := src.Send(ctx, "fault.gives-up", ts(i), 1); err != nil {
			t.Fatal(err)
		}
	}
	api.Revoke(t, token)
	api.CloseConnections(t, "connection "+token, 2, 10*time.Second)
	select {
	case <-src.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("the source did not give up")
	}
	cause := src.Err()
	if !errors.Is(cause, libmetricq.ErrConnect) || !strings.Contains(cause.Error(), "not restored within 1s") || !strings.Contains(cause.Error(), "access to vhost") {
		t.Fatalf("Err() = %v", cause)
	}
	for name, err := range map[string]error{
		"Send":    src.Send(ctx, "fault.gives-up", ts(10), 1),
		"Flush":   src.Flush(ctx),
		"Declare": src.DeclareMetricList(ctx, []string{"fault.other"}),
	} {
		if !errors.Is(err, libmetricq.ErrConnect) || !strings.Contains(err.Error(), "not restored") {
			t.Fatalf("%s after giving up: %v", name, err)
		}
	}
	start := time.Now()
	err = src.Stop(ctx)
	if time.Since(start) > time.Second || err == nil || !strings.Contains(err.Error(), "5 points not delivered") {
		t.Fatalf("Stop after giving up took %v: %v", time.Since(start), err)
	}
	if st := src.Stats(); st.PointsDropped != 5 || st.BufferedPoints != 0 || st.DataConnected || st.ManagementConnected {
		t.Fatalf("stats %+v", st)
	}
}

// Stop during an outage waits for the reconnect up to its timeout, then
// returns, reporting (error, log, stats) the points it could not deliver.
func TestFaultStopDuringOutage(t *testing.T) {
	startManager(t, manager.Config{})
	api := testenv.ManagementAPI(t)
	token := testenv.Token(t, "source")
	userURL := api.CreateUser(t, token, "stop-pw")
	var logs logBuffer
	src, err := libmetricq.NewSource(userURL, token, libmetricq.WithChunkSize(100), libmetricq.WithLogger(logs.logger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := src.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.DeclareMetricList(ctx, []string{"fault.stop"}); err != nil {
		t.Fatal(err)
	}
	api.Revoke(t, token)
	api.CloseConnections(t, "connection "+token, 2, 10*time.Second)
	waitUntil(t, 10*time.Second, "the outage", func() bool { return !src.Stats().DataConnected })
	for i := range 7 {
		if err := src.Send(ctx, "fault.stop", ts(i), 1); err != nil {
			t.Fatal(err)
		}
	}
	stopCtx, cancelStop := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancelStop()
	start := time.Now()
	err = src.Stop(stopCtx)
	elapsed := time.Since(start)
	if elapsed > 900*time.Millisecond {
		t.Fatalf("Stop took %v with a 700ms timeout", elapsed)
	}
	if err == nil {
		t.Fatal("Stop during an outage must report the undelivered points")
	}
	<-src.Done() // the shutdown finishes in the background, in a few seconds at most
	if st := src.Stats(); st.PointsDropped != 7 {
		t.Fatalf("stats %+v", st)
	}
	if err := src.Stop(context.Background()); err == nil || !strings.Contains(err.Error(), "7 points not delivered") {
		t.Fatalf("a later Stop returns the first one's result: %v", err)
	}
	mustContain(t, "the log", logs.String(), "points the broker never confirmed")
}

// The manager is gone while the management connection is restored: the
// source keeps publishing, RPCs wait, and once a manager is back the source
// registers and declares its metrics again.
func TestFaultManagerGoneDuringReconnect(t *testing.T) {
	mgr := startManager(t, manager.Config{})
	token := testenv.Token(t, "source")
	api := testenv.ManagementAPI(t)
	metrics := []string{"fault.manager.a"}
	sink := newDurableSink(t, testenv.URL(t), metrics...)
	src := connect(t, token, libmetricq.WithChunkSize(10))
	ctx := context.Background()
	if err := src.DeclareMetrics(ctx, map[string]libmetricq.Metadata{metrics[0]: {"unit": "K"}}); err != nil {
		t.Fatal(err)
	}
	st := startStream(t, src, metrics, streamEvery, sendTimeout)
	mgr.Close()
	api.CloseConnections(t, "management connection "+token, 1, 10*time.Second)
	waitUntil(t, 10*time.Second, "the management link to drop", func() bool { return !src.Stats().ManagementConnected })
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := src.DeclareMetricList(short, []string{"fault.manager.b"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a declaration without a manager must time out: %v", err)
	}
	confirmed := src.Stats().PointsConfirmed
	waitUntil(t, 10*time.Second, "data to flow without a manager", func() bool { return src.Stats().PointsConfirmed > confirmed+100 })

	mgr2 := startManager(t, manager.Config{})
	waitUntil(t, 20*time.Second, "the source to register again", connected(src))
	if md := mgr2.Metadata(); md[metrics[0]]["unit"] != "K" {
		t.Fatalf("the new manager did not get the declarations again: %v", md)
	}
	want, _ := st.finish(t)
	flushCtx, cancel2 := context.WithTimeout(ctx, waitLimit)
	defer cancel2()
	if err := src.Flush(flushCtx); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(t, want, waitLimit)
	sink.verify(t, want, nil)
}

// No broker at startup: Connect fails fast with ErrConnect and the reason;
// a peer that accepts TCP but never speaks AMQP is bounded by the context.
func TestFaultBrokerGoneAtStartup(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := l.Addr().String()
	l.Close()
	src, err := libmetricq.NewSource("amqp://user:startup-secret@"+closedPort+"/", "source-startup")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	start := time.Now()
	err = src.Connect(ctx)
	if !errors.Is(err, libmetricq.ErrConnect) || !strings.Contains(err.Error(), "refused") || strings.Contains(err.Error(), "startup-secret") {
		t.Fatalf("no broker: %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("Connect took %v with nothing listening", time.Since(start))
	}
	if err := src.Stop(ctx); err != nil {
		t.Fatalf("Stop after a failed Connect: %v", err)
	}

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	src, _ = libmetricq.NewSource("amqp://"+silent.Addr().String()+"/", "source-startup")
	short, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	start = time.Now()
	err = src.Connect(short)
	if !errors.Is(err, libmetricq.ErrConnect) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("silent peer: %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatalf("Connect took %v with a 500ms timeout", time.Since(start))
	}
}
