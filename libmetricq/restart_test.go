package libmetricq_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// Broker-wide faults, each on a RabbitMQ node of the test's own
// (testenv.StartPrivateBroker): the shared broker is never restarted and
// never gets an alarm, since other test runs use it at the same time.

// privateSetup starts a node, the development manager on it, a sink and a
// connected source.
func privateSetup(t *testing.T, metrics []string, opts ...libmetricq.Option) (*testenv.PrivateBroker, *durableSink, *libmetricq.Source) {
	t.Helper()
	b := testenv.StartPrivateBroker(t)
	startManagerAt(t, b.URL)
	sink := newDurableSink(t, b.URL, metrics...)
	src := connectURL(t, b.URL, testenv.Token(t, "source"), opts...)
	if err := src.DeclareMetricList(context.Background(), metrics); err != nil {
		t.Fatal(err)
	}
	return b, sink, src
}

func startManagerAt(t *testing.T, url string) *manager.Manager {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	m, err := manager.Start(ctx, manager.Config{URL: url})
	if err != nil {
		t.Fatalf("manager: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// A memory alarm: the broker blocks publishing (connection.blocked). The
// source stops publishing and keeps the connection; Sends fill the bounded
// buffer and then time out after their timeout, never hang; once the alarm
// clears, everything accepted is published, in order, once.
func TestBrokerMemoryAlarm(t *testing.T) {
	metrics := []string{"alarm.a", "alarm.b"}
	var rep republished
	var logs logBuffer
	const bound, timeout = 400, 200 * time.Millisecond
	b, sink, src := privateSetup(t, metrics, libmetricq.WithChunkSize(10), libmetricq.WithMaxBufferedPoints(bound),
		libmetricq.WithHeartbeat(testHeartbeat), rep.hook(), libmetricq.WithLogger(logs.logger()))
	st := startStream(t, src, metrics, streamEvery, timeout)
	st.flowing(t, 200)

	before := src.Stats()
	raised := time.Now()
	b.SetMemoryAlarm(true)
	waitUntil(t, 15*time.Second, "the broker to block the source", func() bool { return src.Stats().Blocked })
	t.Logf("measured: memory alarm: blocked %v after the alarm was raised", time.Since(raised).Round(10*time.Millisecond))
	waitUntil(t, 15*time.Second, "Sends to time out on the full buffer", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.timeouts >= 5
	})
	// Blocked for longer than the heartbeat allows a silent peer: a
	// blocked connection is not a dead one.
	time.Sleep(3 * testHeartbeat) // the alarm's length, not a synchronisation
	during := src.Stats()
	if during.BufferedPoints != bound || !during.Blocked || during.BlockedEvents < 1 {
		t.Fatalf("while blocked: %+v", during)
	}
	cleared := time.Now()
	b.SetMemoryAlarm(false)
	waitUntil(t, 15*time.Second, "the broker to unblock the source", func() bool { return !src.Stats().Blocked })
	waitUntil(t, 15*time.Second, "the buffer to drain", func() bool { return src.Stats().BufferedPoints < bound/2 })
	t.Logf("measured: memory alarm: publishing again %v after the alarm was cleared", time.Since(cleared).Round(10*time.Millisecond))
	st.flowing(t, 200)
	total, repeats := deliveredOnce(t, st, src, sink, &rep)
	if repeats != 0 {
		t.Fatalf("%d chunks arrived twice", repeats)
	}
	stats := src.Stats()
	if stats.PointsConfirmed != uint64(total) || stats.PointsDropped != 0 || stats.Reconnects != before.Reconnects || stats.ChunksRepublished != 0 {
		t.Fatalf("after the alarm: %+v, %d accepted (before: %+v)", stats, total, before)
	}
	if st.slowest > timeout+500*time.Millisecond {
		t.Fatalf("a send took %v with a %v timeout", st.slowest, timeout)
	}
	mustContain(t, "the log", logs.String(), "flow control", "buffer full", "unblocked")
	t.Logf("%d points accepted, %d sends timed out", total, st.timeouts)

	// Stopping while blocked is bounded too, and says what it gave up. The
	// broker blocks a connection when it publishes: probe until it does.
	b.SetMemoryAlarm(true)
	sent := 0
	send := func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := src.Send(ctx, metrics[0], ts(1_000_000+sent), 1); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	waitUntil(t, 15*time.Second, "the broker to block the source again", func() bool {
		send()
		return src.Stats().Blocked
	})
	for range 50 {
		send()
	}
	stopCtx, cancelStop := context.WithTimeout(context.Background(), time.Second)
	defer cancelStop()
	start := time.Now()
	err := src.Stop(stopCtx)
	if took := time.Since(start); took > time.Second+testenv.LateMargin {
		t.Fatalf("Stop while blocked took %v with a 1s timeout", took)
	}
	dropped := src.Stats().PointsDropped
	if dropped < 50 || dropped > uint64(sent) || err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d points not delivered", dropped)) {
		t.Fatalf("Stop while blocked, %d sent: %d dropped: %v", sent, dropped, err)
	}
}

// The broker application restarts (rabbitmqctl stop_app / start_app),
// taking the manager with it. The source rides it out: it reconnects,
// registers and declares again at the new manager, republishes what was
// unconfirmed, and the sink's quorum queue (which survives the restart)
// gets every accepted point.
func TestBrokerRestart(t *testing.T) {
	metrics := []string{"restart.a", "restart.b"}
	var rep republished
	b, sink, src := privateSetup(t, metrics, libmetricq.WithChunkSize(10), libmetricq.WithHeartbeat(testHeartbeat), rep.hook())
	st := startStream(t, src, metrics, streamEvery, 10*time.Second)
	st.flowing(t, 200)

	stopping := time.Now()
	b.StopApp()
	waitUntil(t, 10*time.Second, "the source to notice", func() bool { return !src.Stats().DataConnected })
	noticed := time.Since(stopping)
	st.flowing(t, 200) // accepted while the broker is down
	starting := time.Now()
	b.StartApp()
	started := time.Since(starting)
	mgr := startManagerAt(t, b.URL) // the first one ended with its connection
	waitUntil(t, 30*time.Second, "the source to reconnect", connected(src))
	t.Logf("measured: broker restart: noticed %v after stop_app began; start_app took %v; reconnected %v after it returned",
		noticed.Round(10*time.Millisecond), started.Round(10*time.Millisecond), (time.Since(starting) - started).Round(10*time.Millisecond))
	md := mgr.Metadata()
	for _, m := range metrics {
		if md[m] == nil {
			t.Fatalf("the new manager did not get %s declared again: %v", m, md)
		}
	}
	st.flowing(t, 200)
	total, repeats := deliveredOnce(t, st, src, sink, &rep)
	stats := src.Stats()
	if stats.PointsConfirmed != uint64(total) || stats.PointsDropped != 0 || stats.Reconnects < 1 || stats.ManagementReconnects < 1 {
		t.Fatalf("stats %+v, %d accepted", stats, total)
	}
	t.Logf("%d points; %d chunks republished, %d reached the sink twice", total, stats.ChunksRepublished, repeats)
}
