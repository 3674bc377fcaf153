package libmetricq_test

// Benchmarks of the send path against a real broker (make bench runs them
// with -benchmem and a CPU profile; see bench/ and BENCHMARKS.md):
//
//	scripts/with-vhost.sh go test ./libmetricq -run '^$' -bench '^BenchmarkSend' -benchmem
//
// Each benchmark gets a vhost of its own (testenv.FreshVhost) with a local
// manager, so it can run beside another manager on METRICQ_TEST_URL. No sink
// is bound: the broker drops the chunks after confirming them, which keeps
// the measurement on the library's side.

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// benchSource connects a source with the given chunk size to a fresh vhost
// with its own manager and declares metrics bench.m0 … bench.m<n-1>.
func benchSource(b *testing.B, chunkSize, metrics int) *libmetricq.Source {
	b.Helper()
	url := testenv.FreshVhost(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := manager.Start(ctx, manager.Config{URL: url, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatalf("manager: %v", err)
	}
	b.Cleanup(func() { m.Close() })
	src, err := libmetricq.NewSource(url, testenv.Token(b, "bench"), libmetricq.WithChunkSize(chunkSize))
	if err != nil {
		b.Fatal(err)
	}
	if err := src.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := src.Stop(ctx); err != nil {
			b.Errorf("stop: %v", err)
		}
	})
	names := make([]string, metrics)
	for i := range names {
		names[i] = fmt.Sprintf("bench.m%d", i)
	}
	if err := src.DeclareMetricList(ctx, names); err != nil {
		b.Fatal(err)
	}
	return src
}

// flushOrFail waits until the broker has confirmed everything sent.
func flushOrFail(b *testing.B, src *libmetricq.Source) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := src.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSend is one Send per op, chunk size 1000, including publishing:
// the timer stops once the broker has confirmed every point. allocs/op must
// be 0 in steady state (a warm-up fills the chunk pool first).
func BenchmarkSend(b *testing.B) {
	src := benchSource(b, 1000, 1)
	benchSendPoints(b, src, func(ctx context.Context, t libmetricq.Timestamp) error {
		return src.Send(ctx, "bench.m0", t, 42.5)
	})
}

// BenchmarkSendByHandle is BenchmarkSend through a Metric handle.
func BenchmarkSendByHandle(b *testing.B) {
	src := benchSource(b, 1000, 1)
	h, err := src.Metric("bench.m0")
	if err != nil {
		b.Fatal(err)
	}
	benchSendPoints(b, src, func(ctx context.Context, t libmetricq.Timestamp) error {
		return h.Send(ctx, t, 42.5)
	})
}

// benchSendPoints times b.N points of one metric, sent by send, until the
// broker has confirmed them.
func benchSendPoints(b *testing.B, src *libmetricq.Source, send func(context.Context, libmetricq.Timestamp) error) {
	ctx := context.Background()
	next := libmetricq.Now()
	sendN := func(n int) {
		for range n {
			next += 1000
			if err := send(ctx, next); err != nil {
				b.Fatal(err)
			}
		}
	}
	sendN(200_000) // warm-up: chunk pool, buffers, connection
	flushOrFail(b, src)
	b.ReportAllocs()
	b.ResetTimer()
	sendN(b.N)
	flushOrFail(b, src)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "points/s")
}

// BenchmarkSendParallel is Send from GOMAXPROCS goroutines, each on a metric
// of its own, chunk size 1000.
func BenchmarkSendParallel(b *testing.B) {
	const metrics = 64
	src := benchSource(b, 1000, metrics)
	ctx := context.Background()
	var id atomic.Int64
	base := libmetricq.Now()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		n := id.Add(1) - 1
		if n >= metrics {
			b.Error("more goroutines than metrics")
			return
		}
		name := fmt.Sprintf("bench.m%d", n)
		next := base
		for pb.Next() {
			next += 1000
			if err := src.Send(ctx, name, next, 1.5); err != nil {
				b.Error(err)
				return
			}
		}
	})
	flushOrFail(b, src)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "points/s")
}

// BenchmarkSendBatch is one SendBatch of 10000 points per op (chunk size
// 10000); ns/op is per batch, the points/s metric per point.
func BenchmarkSendBatch(b *testing.B) {
	const batch = 10000
	src := benchSource(b, batch, 1)
	ctx := context.Background()
	times := make([]libmetricq.Timestamp, batch)
	values := make([]float64, batch)
	next := libmetricq.Now()
	send := func(n int) {
		for range n {
			for i := range times {
				next += 1000
				times[i] = next
				values[i] = float64(i)
			}
			if err := src.SendBatch(ctx, "bench.m0", times, values); err != nil {
				b.Fatal(err)
			}
		}
	}
	send(20)
	flushOrFail(b, src)
	b.ReportAllocs()
	b.ResetTimer()
	send(b.N)
	flushOrFail(b, src)
	b.StopTimer()
	b.ReportMetric(float64(b.N)*batch/b.Elapsed().Seconds(), "points/s")
}
