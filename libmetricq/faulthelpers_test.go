package libmetricq_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// logBuffer collects a source's log (debug level) for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// republished records the chunks a source put back for publishing again.
type republished struct {
	mu     sync.Mutex
	chunks map[string]bool // metric + first timestamp
}

func (r *republished) hook() libmetricq.Option {
	return libmetricq.WithRepublishHook(func(metric string, times []int64, _ []float64) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.chunks == nil {
			r.chunks = map[string]bool{}
		}
		r.chunks[fmt.Sprintf("%s@%d", metric, times[0])] = true
	})
}

func (r *republished) has(metric string, first libmetricq.Timestamp) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.chunks[fmt.Sprintf("%s@%d", metric, first)]
}

// durableSink consumes a durable quorum queue bound to metricq.data, so it
// loses nothing across forced disconnects and broker restarts: a quorum
// queue keeps every message on disk, and the broker confirms a message to
// the source only once the queue has it. The sink reconnects on its own,
// and acknowledges each message only after recording it.
type durableSink struct {
	t     testing.TB
	url   string
	queue string

	mu       sync.Mutex
	arrivals []received // in arrival order
	marked   []bool     // arrivals[i] carried the republished header
	redeliv  int        // redelivered to the sink (its own ack lost), recorded once
	seen     map[uint64]bool
	changed  chan struct{}

	stop chan struct{}
	done chan struct{}
}

func newDurableSink(t testing.TB, url string, bindings ...string) *durableSink {
	t.Helper()
	k := &durableSink{t: t, url: url, queue: testenv.Token(t, "sink"), changed: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}), seen: map[uint64]bool{}}
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("sink: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(k.queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatalf("sink queue: %v", err)
	}
	for _, b := range bindings {
		if err := ch.QueueBind(k.queue, b, "metricq.data", false, nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		close(k.stop)
		<-k.done
		if c, err := amqp.Dial(url); err == nil {
			if ch, err := c.Channel(); err == nil {
				_, _ = ch.QueueDelete(k.queue, false, false, false)
			}
			c.Close()
		}
	})
	go k.run()
	return k
}

func (k *durableSink) run() {
	defer close(k.done)
	for {
		k.consume()
		select {
		case <-k.stop:
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (k *durableSink) consume() {
	conn, err := amqp.Dial(k.url)
	if err != nil {
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	if err := ch.Qos(500, 0, false); err != nil {
		return
	}
	deliveries, err := ch.Consume(k.queue, "", false, false, false, false, nil)
	if err != nil {
		return
	}
	for {
		select {
		case <-k.stop:
			return
		case d, ok := <-deliveries:
			if !ok {
				return
			}
			points, err := libmetricq.DecodeDataChunk(d.Body)
			if err != nil {
				k.t.Errorf("sink: undecodable chunk on %s: %v", d.RoutingKey, err)
			}
			k.mu.Lock()
			// A message redelivered because the sink's own ack was lost is
			// the sink's business, not a duplicate from the source: quorum
			// queues count deliveries, and the source's republished copies
			// are new messages (never "redelivered").
			if d.Redelivered && k.seenBody(d.RoutingKey, points) {
				k.redeliv++
			} else {
				k.arrivals = append(k.arrivals, received{d.RoutingKey, points})
				k.marked = append(k.marked, d.Headers[libmetricq.RepublishedHeader] == true)
				k.markBody(d.RoutingKey, points)
			}
			close(k.changed)
			k.changed = make(chan struct{})
			k.mu.Unlock()
			_ = d.Ack(false)
		}
	}
}

func chunkKey(metric string, points []libmetricq.Point) uint64 {
	h := uint64(14695981039346656037)
	mix := func(v uint64) { h ^= v; h *= 1099511628211 }
	for _, c := range []byte(metric) {
		mix(uint64(c))
	}
	for _, p := range points {
		mix(uint64(p.Time))
	}
	return h
}

func (k *durableSink) seenBody(metric string, points []libmetricq.Point) bool {
	return k.seen[chunkKey(metric, points)]
}

func (k *durableSink) markBody(metric string, points []libmetricq.Point) {
	k.seen[chunkKey(metric, points)] = true
}

// waitFor waits until every point of want has arrived (by timestamp).
func (k *durableSink) waitFor(t testing.TB, want map[string][]libmetricq.Point, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		k.mu.Lock()
		last := map[string]libmetricq.Timestamp{}
		for _, a := range k.arrivals {
			if n := len(a.points); n > 0 && a.points[n-1].Time > last[a.metric] {
				last[a.metric] = a.points[n-1].Time
			}
		}
		changed := k.changed
		k.mu.Unlock()
		complete := true
		for metric, points := range want {
			if len(points) > 0 && last[metric] < points[len(points)-1].Time {
				complete = false
			}
		}
		if complete {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			for metric, points := range want {
				if len(points) > 0 {
					t.Logf("%s: last arrived %d, last accepted %d", metric, last[metric], points[len(points)-1].Time)
				}
			}
			t.Fatalf("sink: not every accepted point arrived within %v", timeout)
		}
	}
}

// verify checks what arrived against the accepted points of each metric:
// dropping whole chunks that repeat an earlier chunk exactly (a republished
// chunk whose first publication the broker had routed, its confirmation
// lost), what remains must be exactly the accepted points, in order. Every
// repeat must be an exact copy of an earlier chunk that the source
// republished. It returns the number of repeats.
func (k *durableSink) verify(t testing.TB, want map[string][]libmetricq.Point, rep *republished) (repeats int) {
	t.Helper()
	got, repeats := k.deduplicated(t, rep)
	for metric, points := range want {
		comparePoints(t, metric, got[metric], points, false)
	}
	return repeats
}

// verifyPrefix waits until at least atLeast points of metric arrived, then
// checks that what arrived (repeats dropped) is the start of accepted, in
// order: for a stop that gave points up.
func (k *durableSink) verifyPrefix(t testing.TB, metric string, accepted []libmetricq.Point, atLeast int) {
	t.Helper()
	if atLeast > 0 {
		k.waitFor(t, map[string][]libmetricq.Point{metric: accepted[:atLeast]}, waitLimit)
	}
	got, _ := k.deduplicated(t, nil)
	comparePoints(t, metric, got[metric], accepted, true)
}

// comparePoints fails unless got equals want, or (prefix) its start.
func comparePoints(t testing.TB, metric string, got, want []libmetricq.Point, prefix bool) {
	t.Helper()
	n := max(len(want), len(got))
	if prefix {
		n = len(got)
	}
	for i := range n {
		if i >= len(got) || i >= len(want) || got[i] != want[i] {
			var gp, wp any = "nothing", "nothing"
			if i < len(got) {
				gp = got[i]
			}
			if i < len(want) {
				wp = want[i]
			}
			t.Fatalf("%s: point %d is %v, want %v (%d arrived, %d accepted)", metric, i, gp, wp, len(got), len(want))
		}
	}
}

// deduplicated is what arrived per metric, whole repeated chunks dropped
// (each checked to be a marked copy of an earlier one, republished when rep
// is given), and the number of repeats.
func (k *durableSink) deduplicated(t testing.TB, rep *republished) (got map[string][]libmetricq.Point, repeats int) {
	t.Helper()
	k.mu.Lock()
	arrivals := append([]received(nil), k.arrivals...)
	marked := append([]bool(nil), k.marked...)
	k.mu.Unlock()
	got = map[string][]libmetricq.Point{}
	byFirst := map[string][]libmetricq.Point{}
	for i, a := range arrivals {
		if len(a.points) == 0 {
			t.Fatalf("empty chunk on %s", a.metric)
		}
		prev := got[a.metric]
		first := a.points[0].Time
		if len(prev) > 0 && first <= prev[len(prev)-1].Time {
			key := fmt.Sprintf("%s@%d", a.metric, first)
			original, ok := byFirst[key]
			if !ok || !samePoints(original, a.points) {
				t.Fatalf("%s: chunk of %d points from %d arrived after %d and is not a repeat of an earlier chunk: reordered or overlapping",
					a.metric, len(a.points), first, prev[len(prev)-1].Time)
			}
			if rep != nil && !rep.has(a.metric, first) {
				t.Fatalf("%s: chunk from %d arrived twice but was never republished: a confirmed chunk was duplicated", a.metric, first)
			}
			if !marked[i] {
				t.Fatalf("%s: the repeat of the chunk from %d lacks the %s header", a.metric, first, libmetricq.RepublishedHeader)
			}
			repeats++
			continue
		}
		byFirst[fmt.Sprintf("%s@%d", a.metric, first)] = a.points
		got[a.metric] = append(got[a.metric], a.points...)
	}
	return got, repeats
}

func samePoints(a, b []libmetricq.Point) bool {
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

// stream sends points to metrics at a steady rate from its own goroutine
// and records which were accepted. A Send that times out (full buffer) is
// counted and the point skipped: it was not accepted.
type stream struct {
	src      *libmetricq.Source
	metrics  []string
	mu       sync.Mutex
	accepted map[string][]libmetricq.Point
	timeouts int
	slowest  time.Duration // the longest call
	err      error
	stop     chan struct{}
	done     chan struct{}
}

func startStream(t testing.TB, src *libmetricq.Source, metrics []string, every, sendTimeout time.Duration) *stream {
	return startBatchStream(t, src, metrics, every, 1, sendTimeout)
}

// startBatchStream sends batch points per metric and tick, with SendBatch
// when batch > 1.
func startBatchStream(t testing.TB, src *libmetricq.Source, metrics []string, every time.Duration, batch int, sendTimeout time.Duration) *stream {
	return startStreamVia(t, src, metrics, every, batch, sendTimeout, false)
}

// startHandleStream is startStream sending through Metric handles.
func startHandleStream(t testing.TB, src *libmetricq.Source, metrics []string, every, sendTimeout time.Duration) *stream {
	return startStreamVia(t, src, metrics, every, 1, sendTimeout, true)
}

func startStreamVia(t testing.TB, src *libmetricq.Source, metrics []string, every time.Duration, batch int, sendTimeout time.Duration, byHandle bool) *stream {
	t.Helper()
	s := &stream{src: src, metrics: metrics, accepted: map[string][]libmetricq.Point{}, stop: make(chan struct{}), done: make(chan struct{})}
	handles := map[string]*libmetricq.Metric{}
	if byHandle {
		for _, m := range metrics {
			h, err := src.Metric(m)
			if err != nil {
				t.Fatal(err)
			}
			handles[m] = h
		}
	}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		times := make([]libmetricq.Timestamp, batch)
		values := make([]float64, batch)
		for i := 0; ; i += batch {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			for j := range batch {
				times[j], values[j] = ts(i+j), float64(i+j)
			}
			for _, m := range metrics {
				ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
				start := time.Now()
				var err error
				switch {
				case byHandle:
					err = handles[m].Send(ctx, times[0], values[0])
				case batch == 1:
					err = src.Send(ctx, m, times[0], values[0])
				default:
					err = src.SendBatch(ctx, m, times, values)
				}
				took := time.Since(start)
				cancel()
				s.mu.Lock()
				s.slowest = max(s.slowest, took)
				switch {
				case err == nil:
					for j := range batch {
						s.accepted[m] = append(s.accepted[m], libmetricq.Point{Time: times[j], Value: values[j]})
					}
				case errors.Is(err, context.DeadlineExceeded):
					s.timeouts++
				default:
					s.err = err
				}
				s.mu.Unlock()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					return
				}
			}
		}
	}()
	t.Cleanup(s.end)
	return s
}

// flowing waits until the stream has had n more points accepted, so that a
// fault hits a source with traffic in flight.
func (s *stream) flowing(t testing.TB, n int) {
	t.Helper()
	total := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		sum := 0
		for _, points := range s.accepted {
			sum += len(points)
		}
		return sum
	}
	want := total() + n
	waitUntil(t, 30*time.Second, fmt.Sprintf("%d more points accepted", n), func() bool { return total() >= want })
}

func (s *stream) end() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// finish stops the stream and returns what was accepted; any error but a
// timeout fails the test.
func (s *stream) finish(t testing.TB) (map[string][]libmetricq.Point, int) {
	t.Helper()
	s.end()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		t.Fatalf("send failed: %v", s.err)
	}
	total := 0
	for _, p := range s.accepted {
		total += len(p)
	}
	return s.accepted, total
}

// deliveredOnce ends the stream, flushes the source and checks that the
// sink got every accepted point once and in order, whole republished chunks
// aside. It returns the points accepted and the chunks that arrived twice.
func deliveredOnce(t testing.TB, st *stream, src *libmetricq.Source, sink *durableSink, rep *republished) (total, repeats int) {
	t.Helper()
	want, total := st.finish(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := src.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(t, want, waitLimit)
	return total, sink.verify(t, want, rep)
}

func (s *stream) acceptedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, p := range s.accepted {
		n += len(p)
	}
	return n
}

// waitUntil polls cond every 20 ms until it holds, failing after timeout.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func connected(src *libmetricq.Source) func() bool {
	return func() bool {
		st := src.Stats()
		return st.DataConnected && st.ManagementConnected
	}
}

func mustContain(t testing.TB, what, text string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(text, p) {
			t.Fatalf("%s does not mention %q:\n%s", what, p, text)
		}
	}
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// stopSoon stops a source in a test's cleanup, bounded.
func stopSoon(src *libmetricq.Source) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = src.Stop(ctx)
}
