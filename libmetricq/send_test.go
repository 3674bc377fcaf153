package libmetricq_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// sameRefusal fails unless a send by handle was refused exactly as the same
// send by name: the same kind and the same text.
func sameRefusal(t *testing.T, what string, byHandle, byName, kind error) {
	t.Helper()
	if !errors.Is(byHandle, kind) || !errors.Is(byName, kind) {
		t.Fatalf("%s: by handle %v, by name %v; want %v", what, byHandle, byName, kind)
	}
	if byHandle.Error() != byName.Error() {
		t.Fatalf("%s: by handle %q, by name %q: want the same error", what, byHandle, byName)
	}
}

func TestMetricHandleNames(t *testing.T) {
	src, err := libmetricq.NewSource(testenv.URL(t), testenv.Token(t, "source"))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "bad*name", "bad.#", "_reserved", "nul\x00", "\xff.x", strings.Repeat("x", 256)} {
		h, err := src.Metric(bad)
		if !errors.Is(err, libmetricq.ErrInvalid) || h != nil {
			t.Fatalf("Metric(%q) = %v, %v; want nil and ErrInvalid", bad, h, err)
		}
		if want := libmetricq.ValidateMetricName(bad); err.Error() != want.Error() {
			t.Fatalf("Metric(%q): %q, want the name check's %q", bad, err, want)
		}
	}
	h, err := src.Metric("test.handle")
	if err != nil || h.Name() != "test.handle" {
		t.Fatalf("Metric(test.handle) = %v, %v", h, err)
	}
	// Not connected yet: refused as a send by name is.
	ctx := context.Background()
	sameRefusal(t, "send before connect", h.Send(ctx, ts(1), 1), src.Send(ctx, "test.handle", ts(1), 1), libmetricq.ErrInvalid)
	sameRefusal(t, "batch before connect",
		h.SendBatch(ctx, []libmetricq.Timestamp{ts(1)}, []float64{1}),
		src.SendBatch(ctx, "test.handle", []libmetricq.Timestamp{ts(1)}, []float64{1}), libmetricq.ErrInvalid)
	if st := src.Stats(); st.PointsAccepted != 0 || st.BufferedPoints != 0 {
		t.Fatalf("refused points left traces: %+v", st)
	}
}

// A handle sends exactly as its name does: the same checks and errors, one
// order shared with sends by name, the same chunks.
func TestMetricHandleSendsAsByName(t *testing.T) {
	startManager(t, manager.Config{})
	sink := rawSink(t, testenv.URL(t), "test.h")
	src := connect(t, testenv.Token(t, "source"), libmetricq.WithChunkSize(6))
	ctx := context.Background()
	h, err := src.Metric("test.h")
	if err != nil {
		t.Fatal(err)
	}
	sameRefusal(t, "undeclared", h.Send(ctx, ts(0), 0), src.Send(ctx, "test.h", ts(0), 0), libmetricq.ErrUndeclared)
	sameRefusal(t, "undeclared batch",
		h.SendBatch(ctx, []libmetricq.Timestamp{ts(0)}, []float64{0}),
		src.SendBatch(ctx, "test.h", []libmetricq.Timestamp{ts(0)}, []float64{0}), libmetricq.ErrUndeclared)
	if err := src.DeclareMetricList(ctx, []string{"test.h"}); err != nil {
		t.Fatal(err)
	}

	// By handle and by name alternate on one metric.
	if err := h.Send(ctx, ts(0), 0); err != nil {
		t.Fatal(err)
	}
	if err := src.Send(ctx, "test.h", ts(1), 1); err != nil {
		t.Fatal(err)
	}
	sameRefusal(t, "a repeated time", h.Send(ctx, ts(1), 9), src.Send(ctx, "test.h", ts(1), 9), libmetricq.ErrOrder)
	sameRefusal(t, "an earlier time", h.Send(ctx, ts(0), 9), src.Send(ctx, "test.h", ts(0), 9), libmetricq.ErrOrder)
	batches := []struct {
		what   string
		times  []libmetricq.Timestamp
		values []float64
		kind   error
	}{
		{"a batch repeating a time", []libmetricq.Timestamp{ts(2), ts(2)}, []float64{2, 2}, libmetricq.ErrOrder},
		{"a batch not after the last", []libmetricq.Timestamp{ts(1), ts(2)}, []float64{1, 2}, libmetricq.ErrOrder},
		{"a batch short of values", []libmetricq.Timestamp{ts(2)}, []float64{2, 3}, libmetricq.ErrInvalid},
	}
	for _, b := range batches {
		sameRefusal(t, b.what, h.SendBatch(ctx, b.times, b.values), src.SendBatch(ctx, "test.h", b.times, b.values), b.kind)
	}
	if err := h.SendBatch(ctx, nil, nil); err != nil {
		t.Fatalf("an empty batch is no error: %v", err)
	}
	if err := h.SendBatch(ctx, []libmetricq.Timestamp{ts(2), ts(3), ts(4)}, []float64{2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	if err := src.Send(ctx, "test.h", ts(5), 5); err != nil {
		t.Fatal(err)
	}
	// Exactly the accepted points, in one chunk of 6.
	expectPoints(t, next(t, sink), "test.h", 0, 6)
	if st := src.Stats(); st.PointsAccepted != 6 {
		t.Fatalf("PointsAccepted %d, want 6", st.PointsAccepted)
	}

	if err := src.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	sameRefusal(t, "after stop", h.Send(ctx, ts(6), 6), src.Send(ctx, "test.h", ts(6), 6), libmetricq.ErrStopped)
	sameRefusal(t, "batch after stop",
		h.SendBatch(ctx, []libmetricq.Timestamp{ts(6)}, []float64{6}),
		src.SendBatch(ctx, "test.h", []libmetricq.Timestamp{ts(6)}, []float64{6}), libmetricq.ErrStopped)
	late, err := src.Metric("test.h")
	if err != nil {
		t.Fatalf("a handle after stop: %v", err)
	}
	if err := late.Send(ctx, ts(7), 7); !errors.Is(err, libmetricq.ErrStopped) {
		t.Fatalf("send by a handle taken after stop: %v", err)
	}
}

// Handles used from many goroutines at once: each goroutine takes its own
// handles on the shared metrics and sends to all of them, timestamps drawn
// from one counter per metric, so that sends to one metric through
// different handles race. A point that lost the race (its timestamp not
// after one accepted meanwhile) is refused with ErrOrder; every accepted
// point arrives once, in order.
func TestMetricHandlesConcurrently(t *testing.T) {
	const metrics, senders, perSender = 4, 4, 400
	startManager(t, manager.Config{})
	names := make([]string, metrics)
	for i := range names {
		names[i] = fmt.Sprintf("test.conc.m%d", i)
	}
	sink := newDurableSink(t, testenv.URL(t), "test.conc.#")
	src := connect(t, testenv.Token(t, "source"), libmetricq.WithChunkSize(7))
	ctx := context.Background()
	if err := src.DeclareMetricList(ctx, names); err != nil {
		t.Fatal(err)
	}
	counters := make([]atomic.Int64, metrics)
	var mu sync.Mutex
	accepted := map[string][]libmetricq.Point{}
	var refused int
	var failure error
	var wg sync.WaitGroup
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			handles := make([]*libmetricq.Metric, metrics)
			for i, name := range names {
				h, err := src.Metric(name)
				if err != nil {
					mu.Lock()
					failure = err
					mu.Unlock()
					return
				}
				handles[i] = h
			}
			for range perSender {
				for i, h := range handles {
					k := int(counters[i].Add(1))
					p := libmetricq.Point{Time: ts(k), Value: float64(i*100_000 + k)}
					err := h.Send(ctx, p.Time, p.Value)
					mu.Lock()
					switch {
					case err == nil:
						accepted[h.Name()] = append(accepted[h.Name()], p)
					case errors.Is(err, libmetricq.ErrOrder):
						refused++
					default:
						failure = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if failure != nil {
		t.Fatal(failure)
	}
	total := 0
	for _, points := range accepted {
		slices.SortFunc(points, func(a, b libmetricq.Point) int { return cmp.Compare(a.Time, b.Time) })
		total += len(points)
	}
	if total+refused != metrics*senders*perSender || total < metrics*perSender {
		t.Fatalf("%d accepted and %d refused of %d sends", total, refused, metrics*senders*perSender)
	}
	flushCtx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	if err := src.Flush(flushCtx); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(t, accepted, waitLimit)
	if repeats := sink.verify(t, accepted, nil); repeats != 0 {
		t.Fatalf("%d chunks arrived twice without a reconnect", repeats)
	}
	if st := src.Stats(); st.PointsAccepted != uint64(total) {
		t.Fatalf("PointsAccepted %d, want %d", st.PointsAccepted, total)
	}
	t.Logf("%d points accepted, %d refused as out of order", total, refused)
}

// A handle taken before the connections are force-closed keeps sending
// across the reconnect: nothing accepted through it is lost or reordered.
func TestMetricHandleAcrossReconnect(t *testing.T) {
	startManager(t, manager.Config{})
	url := testenv.URL(t)
	api := testenv.ManagementAPI(t)
	token := testenv.Token(t, "source")
	metrics := []string{"test.rec.a", "test.rec.b"}
	sink := newDurableSink(t, url, metrics...)
	var rep republished
	src := connect(t, token, libmetricq.WithChunkSize(10), rep.hook(), libmetricq.WithLogger(slogDiscard()))
	if err := src.DeclareMetricList(context.Background(), metrics); err != nil {
		t.Fatal(err)
	}
	st := startHandleStream(t, src, metrics, streamEvery, sendTimeout)
	st.flowing(t, 200)
	before := src.Stats()
	if n := api.CloseConnections(t, "connection "+token, 2, 10*time.Second); n != 2 {
		t.Fatalf("closed %d connections, want 2", n)
	}
	waitUntil(t, 10*time.Second, "the source to reconnect", func() bool {
		s := src.Stats()
		return s.Reconnects > before.Reconnects && s.ManagementReconnects > before.ManagementReconnects
	})
	waitUntil(t, 10*time.Second, "both connections up", connected(src))
	st.flowing(t, 200)
	total, _ := deliveredOnce(t, st, src, sink, &rep)
	if stats := src.Stats(); stats.PointsAccepted != uint64(total) || stats.PointsDropped != 0 {
		t.Fatalf("stats %+v, %d accepted through handles", stats, total)
	}
}
