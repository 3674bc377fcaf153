package libmetricq_test

import (
	"context"
	"errors"
	"testing"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// The API for layers that hold points in front of Send (the C library's
// stage): reserved space counts against the bound, reserved batches never
// wait, MetricState tells where a metric stands, and the before-stop hook
// runs while the source still takes points.
func TestReserveAndSendBatchReserved(t *testing.T) {
	startManager(t, manager.Config{})
	sink := rawSink(t, testenv.URL(t), "test.reserve")
	var beforeStop []error
	var src *libmetricq.Source
	src = connect(t, testenv.Token(t, "source"), libmetricq.WithChunkSize(4), libmetricq.WithMaxBufferedPoints(6),
		libmetricq.WithBeforeStop(func() {
			// Still taking points: a layer hands its last ones over here.
			beforeStop = append(beforeStop, src.SendBatchReserved("test.reserve", []libmetricq.Timestamp{ts(5)}, []float64{5}))
		}))
	ctx := context.Background()

	if _, err := src.MetricState("test.reserve"); !errors.Is(err, libmetricq.ErrUndeclared) {
		t.Fatalf("MetricState of an undeclared metric: %v", err)
	}
	if err := src.DeclareMetricList(ctx, []string{"test.reserve"}); err != nil {
		t.Fatal(err)
	}
	st, err := src.MetricState("test.reserve")
	if err != nil || st != (libmetricq.MetricState{ChunkSize: 4}) {
		t.Fatalf("MetricState of a new metric = %+v, %v", st, err)
	}

	if got := src.TryReserve(4); got != 4 {
		t.Fatalf("TryReserve(4) with 6 free = %d", got)
	}
	if got := src.TryReserve(4); got != 2 {
		t.Fatalf("TryReserve(4) with 2 free = %d, want what is free", got)
	}
	if got := src.TryReserve(1); got != 0 {
		t.Fatalf("TryReserve(1) with nothing free = %d", got)
	}
	if got := src.Stats().BufferedPoints; got != 6 {
		t.Fatalf("reserved space not counted as buffered: %d", got)
	}
	full, cancel := context.WithCancel(ctx)
	cancel()
	if err := src.Reserve(full, "test.reserve", 1); err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("Reserve on a full buffer with an ended context: %v", err)
	}
	if err := src.Reserve(ctx, "test.reserve", 7); !errors.Is(err, libmetricq.ErrInvalid) {
		t.Fatalf("Reserve beyond the bound: %v", err)
	}

	times := []libmetricq.Timestamp{ts(0), ts(1), ts(2)}
	if err := src.SendBatchReserved("test.reserve", times, []float64{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	err = src.SendBatchReserved("test.reserve", []libmetricq.Timestamp{ts(2)}, []float64{9})
	if !errors.Is(err, libmetricq.ErrOrder) || err.Error() != libmetricq.OrderError("test.reserve", ts(2), ts(2)).Error() {
		t.Fatalf("out-of-order reserved batch: %v", err)
	}
	st, err = src.MetricState("test.reserve")
	if err != nil || st != (libmetricq.MetricState{ChunkSize: 4, Open: 3, Last: ts(2), HasLast: true}) {
		t.Fatalf("MetricState after 3 points = %+v, %v", st, err)
	}
	if err := src.SendBatchReserved("test.reserve", []libmetricq.Timestamp{ts(3), ts(4)}, []float64{3, 4}); err != nil {
		t.Fatal(err)
	}
	// 6 reserved, 5 used; the one left over goes to the hook's point.
	expectPoints(t, next(t, sink), "test.reserve", 0, 4)
	if err := src.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if len(beforeStop) != 1 || beforeStop[0] != nil {
		t.Fatalf("before-stop hook: %v", beforeStop)
	}
	expectPoints(t, next(t, sink), "test.reserve", 4, 2)
	if got := src.Stats().PointsAccepted; got != 0 {
		t.Fatalf("accepted %d: reserved points are counted by the layer in front, not here", got)
	}
	if err := src.SendBatchReserved("test.reserve", []libmetricq.Timestamp{ts(9)}, []float64{9}); !errors.Is(err, libmetricq.ErrStopped) {
		t.Fatalf("reserved batch after stop: %v", err)
	}
	if _, err := src.MetricState("test.reserve"); !errors.Is(err, libmetricq.ErrStopped) {
		t.Fatalf("MetricState after stop: %v", err)
	}
}

func TestUnreserveFreesSpace(t *testing.T) {
	startManager(t, manager.Config{})
	src := connect(t, testenv.Token(t, "source"), libmetricq.WithMaxBufferedPoints(3))
	if got := src.TryReserve(3); got != 3 {
		t.Fatalf("TryReserve(3) = %d", got)
	}
	src.Unreserve(2)
	if got := src.Stats().BufferedPoints; got != 1 {
		t.Fatalf("buffered after Unreserve(2) = %d, want 1", got)
	}
	if err := src.Reserve(context.Background(), "m", 2); err != nil {
		t.Fatalf("Reserve after Unreserve: %v", err)
	}
}
