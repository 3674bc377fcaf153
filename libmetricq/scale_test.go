//go:build !race

package libmetricq_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

const (
	scaleMetrics = 100_000
	scaleChunk   = 2
	scalePoints  = 4 // per metric: a chunk in flight at the reconnect, and one sent across it
)

// scalePoint is point k of metric i: its value names both, so that a point
// that arrives on the wrong metric or out of place is seen.
func scalePoint(i, k int) libmetricq.Point {
	return libmetricq.Point{Time: ts(k), Value: float64(i)*100 + float64(k)}
}

// One source with 100,000 metrics, declared in one call: every point of
// every metric arrives, in order and exactly once (but for chunks the source
// republished after the reconnect), with both connections force-closed
// while the first chunk of every metric is being published. While the
// management connection comes back and declares the 100,000 metrics again,
// sends go on without waiting: each has a deadline well below what a stall
// behind the re-declaration would take. Points are sent before the
// reconnect (points 0 and 1: a chunk), during it (2) and after it (3).
//
// It runs without the race detector (make test-go runs it separately):
// instrumented, publishing and consuming 200,000 messages takes minutes and
// adds nothing the smaller concurrent tests do not cover.
func TestScaleHundredThousandMetricsAcrossReconnect(t *testing.T) {
	startManager(t, manager.Config{Logger: slogDiscard()})
	api := testenv.ManagementAPI(t)
	token := testenv.Token(t, "scale")
	sink := newScaleSink(t, testenv.URL(t))
	var rep republished
	src := connect(t, token, libmetricq.WithChunkSize(scaleChunk), libmetricq.WithLogger(slogDiscard()), rep.hook())

	names := make([]string, scaleMetrics)
	for i := range names {
		names[i] = "scale.m" + strconv.Itoa(i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := src.DeclareMetricList(ctx, names); err != nil {
		t.Fatal(err)
	}
	if got := len(src.DeclaredMetrics()); got != scaleMetrics {
		t.Fatalf("%d metrics declared, want %d", got, scaleMetrics)
	}
	sendPoints := func(from, to int) {
		t.Helper()
		for k := from; k < to; k++ {
			for i, name := range names {
				p := scalePoint(i, k)
				sendCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := src.Send(sendCtx, name, p.Time, p.Value)
				cancel()
				if err != nil {
					t.Fatalf("send %s point %d: %v", name, k, err)
				}
			}
		}
	}

	began := time.Now()
	step := func(what string) { t.Logf("%v: %s", time.Since(began).Round(time.Millisecond), what) }
	step("declared")
	sendPoints(0, 2)
	step("first chunks sent")
	// Those 100,000 chunks are still being published: the reconnect hits
	// chunks in flight, which are published again, in order.
	if n := api.CloseConnections(t, "connection "+token, 2, 10*time.Second); n != 2 {
		t.Fatalf("closed %d connections, want 2", n)
	}
	sendPoints(2, 3)
	step("sent during the reconnect")
	waitUntil(t, time.Minute, "both connections back", func() bool {
		st := src.Stats()
		return st.DataConnected && st.ManagementConnected && st.ManagementReconnects >= 1 && st.Reconnects >= 1
	})
	step("reconnected")
	sendPoints(3, 4)
	if err := src.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	step("flushed")
	sink.waitComplete(t, 3*time.Minute)
	repeats := sink.check(t, &rep)
	st := src.Stats()
	const total = scaleMetrics * scalePoints
	if st.PointsAccepted != total || st.PointsConfirmed < total || st.PointsDropped != 0 {
		t.Fatalf("stats %+v, want %d points accepted and confirmed", st, total)
	}
	t.Logf("%d points of %d metrics arrived in order; %d chunks republished, %d of them arrived twice", total, scaleMetrics, republishedCount(&rep), repeats)
}

// scaleSink follows every metric's points as they arrive, without keeping
// them: the next index each metric expects, and what went wrong.
type scaleSink struct {
	mu       sync.Mutex
	next     []int // per metric: index of the next point expected
	complete int   // metrics with every point
	repeats  int
	repeated []received // chunks that arrived again, checked against the republished ones at the end
	problems []string
	done     chan struct{}
}

func newScaleSink(t *testing.T, url string) *scaleSink {
	t.Helper()
	k := &scaleSink{next: make([]int, scaleMetrics), done: make(chan struct{})}
	chunks := rawSink(t, url, "scale.#")
	go func() {
		for c := range chunks {
			k.take(c.metric, c.points)
		}
	}()
	return k
}

func (k *scaleSink) fail(format string, args ...any) {
	if len(k.problems) < 10 {
		k.problems = append(k.problems, fmt.Sprintf(format, args...))
	}
}

func (k *scaleSink) take(metric string, points []libmetricq.Point) {
	k.mu.Lock()
	defer k.mu.Unlock()
	i, err := strconv.Atoi(strings.TrimPrefix(metric, "scale.m"))
	switch {
	case err != nil || i < 0 || i >= scaleMetrics || !strings.HasPrefix(metric, "scale.m"):
		k.fail("a chunk on %q, which no metric of the test is", metric)
		return
	case len(points) == 0:
		k.fail("%s: empty chunk", metric)
		return
	}
	first := int((points[0].Time - ts(0)) / 1_000_000)
	for j, p := range points {
		if p != scalePoint(i, first+j) {
			k.fail("%s: point %d of a chunk is %+v, want %+v", metric, j, p, scalePoint(i, first+j))
			return
		}
	}
	switch {
	case first == k.next[i]:
		k.next[i] += len(points)
		if k.next[i] == scalePoints {
			k.complete++
			if k.complete == scaleMetrics {
				close(k.done)
			}
		}
	case first+len(points) <= k.next[i]:
		k.repeats++
		k.repeated = append(k.repeated, received{metric, points})
	default:
		k.fail("%s: chunk of points %d..%d arrived when point %d was next: reordered, overlapping or lost",
			metric, first, first+len(points)-1, k.next[i])
	}
}

func (k *scaleSink) waitComplete(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-k.done:
	case <-time.After(timeout):
		k.mu.Lock()
		defer k.mu.Unlock()
		t.Fatalf("after %v, %d of %d metrics have all their points; problems: %v", timeout, k.complete, scaleMetrics, k.problems)
	}
}

// check fails on any problem seen, and on a chunk that arrived twice
// without having been republished; it returns the number of repeats.
func (k *scaleSink) check(t *testing.T, rep *republished) int {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.problems) > 0 {
		t.Fatalf("sink: %s", strings.Join(k.problems, "; "))
	}
	for _, r := range k.repeated {
		if !rep.has(r.metric, r.points[0].Time) {
			t.Fatalf("%s: the chunk from %d arrived twice but was never republished", r.metric, r.points[0].Time)
		}
	}
	return k.repeats
}

func republishedCount(r *republished) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.chunks)
}
