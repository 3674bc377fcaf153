package libmetricq_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// A bound smaller than the open chunks need: 50 metrics of chunk size 100
// sent to round-robin fill a bound of 1,000 points with open chunks after
// 20 rounds, and no chunk has filled. Without early sealing every further
// send would wait for space that nothing frees, and time out. With it every
// send is accepted, the early sealing is logged, and every point arrives
// once, in order.
func TestOpenChunksBeyondTheBoundAreSealedEarly(t *testing.T) {
	startManager(t, manager.Config{Logger: slogDiscard()})
	const metrics, rounds, bound = 50, 60, 1000
	names := make([]string, metrics)
	for i := range names {
		names[i] = "bound.m" + strconv.Itoa(i)
	}
	sink := rawSink(t, testenv.URL(t), "bound.#")
	var log logBuffer
	src := connect(t, testenv.Token(t, "bound"), libmetricq.WithChunkSize(100), libmetricq.WithMaxBufferedPoints(bound), libmetricq.WithLogger(log.logger()))
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := src.DeclareMetricList(ctx, names); err != nil {
		t.Fatal(err)
	}
	if got := src.MaxBufferedPoints(); got != bound {
		t.Fatalf("a bound the user set changed to %d when metrics were declared, want %d", got, bound)
	}
	for k := range rounds {
		for i, name := range names {
			sendCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := src.Send(sendCtx, name, ts(k), float64(i*1000+k))
			cancel()
			if err != nil {
				t.Fatalf("round %d, %s: %v (buffered %d of %d)", k, name, err, src.Stats().BufferedPoints, bound)
			}
		}
	}
	if err := src.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mustContain(t, "log", log.String(), "published them before they filled", "max_buffered_points=1000")

	got := make(map[string]int, metrics) // next point expected, per metric
	var chunks, smaller int
	for total := 0; total < metrics*rounds; {
		r := next(t, sink)
		i, err := strconv.Atoi(r.metric[len("bound.m"):])
		if err != nil {
			t.Fatalf("chunk on %q", r.metric)
		}
		for _, p := range r.points {
			k := got[r.metric]
			if p.Time != ts(k) || p.Value != float64(i*1000+k) {
				t.Fatalf("%s: got %+v where point %d (time %d, value %d) was next", r.metric, p, k, ts(k), i*1000+k)
			}
			got[r.metric]++
		}
		total += len(r.points)
		chunks++
		if len(r.points) < 100 {
			smaller++
		}
	}
	if st := src.Stats(); st.PointsAccepted != metrics*rounds || st.PointsDropped != 0 || st.BufferFullTimeouts != 0 {
		t.Fatalf("stats %+v, want %d points accepted, none dropped or timed out", st, metrics*rounds)
	}
	t.Logf("%d points in %d chunks, %d of them published before they filled", metrics*rounds, chunks, smaller)
}

// Without a bound set, the bound is twice the declared chunk sizes (at
// least the default), and follows a declared metric's new chunk size.
func TestDefaultBoundGrowsWithTheDeclaredChunkSizes(t *testing.T) {
	startManager(t, manager.Config{Logger: slogDiscard()})
	const metrics, chunk = 600, 1000
	src := connect(t, testenv.Token(t, "grow"), libmetricq.WithChunkSize(chunk), libmetricq.WithLogger(slogDiscard()))
	if got := src.MaxBufferedPoints(); got != libmetricq.DefaultMaxBufferedPoints {
		t.Fatalf("bound %d before declaring, want the default %d", got, libmetricq.DefaultMaxBufferedPoints)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	names := make([]string, metrics)
	for i := range names {
		names[i] = "grow.m" + strconv.Itoa(i)
	}
	if err := src.DeclareMetricList(ctx, names[:10]); err != nil {
		t.Fatal(err)
	}
	if got := src.MaxBufferedPoints(); got != libmetricq.DefaultMaxBufferedPoints {
		t.Fatalf("bound %d with 10 metrics of chunk %d, want the default %d", got, chunk, libmetricq.DefaultMaxBufferedPoints)
	}
	if err := src.DeclareMetricList(ctx, names); err != nil { // the first 10 again: counted once
		t.Fatal(err)
	}
	if got, want := src.MaxBufferedPoints(), 2*metrics*chunk; got != want {
		t.Fatalf("bound %d with %d metrics of chunk %d, want %d", got, metrics, chunk, want)
	}
	if err := src.SetMetricChunkSize(names[0], 3*chunk); err != nil {
		t.Fatal(err)
	}
	if err := src.SetMetricChunkSize("grow.undeclared", 5*chunk); err != nil {
		t.Fatal(err)
	}
	if got, want := src.MaxBufferedPoints(), 2*(metrics+2)*chunk; got != want {
		t.Fatalf("bound %d after one declared metric's chunk size tripled, want %d", got, want)
	}
	if err := src.SetMetricChunkSize(names[1], libmetricq.ChunkSizeManual); err != nil {
		t.Fatal(err)
	}
	if got, want := src.MaxBufferedPoints(), 2*(metrics+1)*chunk; got != want {
		t.Fatalf("bound %d after a metric's chunk size became manual, want %d", got, want)
	}
}
