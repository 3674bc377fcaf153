package libmetricq_test

import (
	"context"
	"errors"
	"testing"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

func times(from, count int) ([]libmetricq.Timestamp, []float64) {
	stamps := make([]libmetricq.Timestamp, count)
	vs := make([]float64, count)
	for i := range stamps {
		stamps[i] = ts(from + i)
		vs[i] = float64(from + i)
	}
	return stamps, vs
}

// A staging layer's view (the C library's stage): a lease has room for no
// more than the open chunk lacks, with its space reserved; staged points
// are taken without a second order check and counted when handed over;
// points that did not fit the lease are checked as any batch.
func TestLeaseHandOver(t *testing.T) {
	startManager(t, manager.Config{})
	sink := rawSink(t, testenv.URL(t), "test.lease")
	src := connect(t, testenv.Token(t, "source"), libmetricq.WithChunkSize(4), libmetricq.WithMaxBufferedPoints(640))
	ctx := context.Background()

	if _, _, err := src.HandOver("test.lease", nil, nil, 100); !errors.Is(err, libmetricq.ErrUndeclared) {
		t.Fatalf("lease of an undeclared metric: %v", err)
	}
	if err := src.DeclareMetricList(ctx, []string{"test.lease"}); err != nil {
		t.Fatal(err)
	}
	_, lease, err := src.HandOver("test.lease", nil, nil, 100)
	if err != nil || lease != (libmetricq.Lease{Room: 4}) {
		t.Fatalf("first lease = %+v, %v; want room for the chunk's 4 points, no After", lease, err)
	}
	if got := src.Stats().BufferedPoints; got != 4 {
		t.Fatalf("the lease's space is not counted as buffered: %d", got)
	}

	// Staged points fill the chunk: it is sealed with the hand-over.
	staged, values := times(0, 4)
	taken, lease, err := src.HandOver("test.lease", staged, values, 100)
	if taken != 4 || err != nil || lease != (libmetricq.Lease{Room: 4, After: ts(3), HasAfter: true}) {
		t.Fatalf("hand-over of 4 staged: took %d, next lease %+v, %v", taken, lease, err)
	}
	expectPoints(t, next(t, sink), "test.lease", 0, 4)
	if got := src.Stats().PointsAccepted; got != 4 {
		t.Fatalf("accepted %d after the hand-over of 4", got)
	}

	// A point that did not fit the lease gets the order rule's verdict.
	err = src.SendLeased("test.lease", []libmetricq.Timestamp{ts(3)}, []float64{9})
	if !errors.Is(err, libmetricq.ErrOrder) || err.Error() != libmetricq.OrderError("test.lease", ts(3), ts(3)).Error() {
		t.Fatalf("out-of-order point: %v", err)
	}
	batch, values := times(4, 2)
	if err := src.SendLeased("test.lease", batch, values); err != nil {
		t.Fatal(err)
	}
	// The lease follows the open chunk: 2 of 4 taken.
	_, lease, err = src.HandOver("test.lease", nil, nil, 100)
	if err != nil || lease != (libmetricq.Lease{Room: 2, After: ts(5), HasAfter: true}) {
		t.Fatalf("lease with 2 points open = %+v, %v", lease, err)
	}
	if _, _, err := src.HandOver("test.lease", nil, nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := src.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	expectPoints(t, next(t, sink), "test.lease", 4, 2)
	if st := src.Stats(); st.BufferedPoints != 0 || st.PointsAccepted != 6 {
		t.Fatalf("after the lease ended and a flush: buffered %d, accepted %d", st.BufferedPoints, st.PointsAccepted)
	}
}

// Buffer space: a lease takes what is free, SendLeased says ErrNoRoom when
// nothing is, AwaitRoom waits for it; at stop the hook hands staged points
// over after the source stopped taking new ones, and the leases' space
// goes back.
func TestLeaseBufferAndStop(t *testing.T) {
	startManager(t, manager.Config{})
	sink := rawSink(t, testenv.URL(t), "test.lease")
	var inHook []error
	var src *libmetricq.Source
	src = connect(t, testenv.Token(t, "source"), libmetricq.WithChunkSize(3), libmetricq.WithMaxBufferedPoints(3),
		libmetricq.WithBeforeStop(func() {
			staged, values := times(4, 1)
			taken, _, err := src.HandOver("test.lease", staged, values, 10)
			if taken != 1 {
				err = errors.New("the staged point was not taken")
			}
			inHook = append(inHook, err, src.SendLeased("test.lease", []libmetricq.Timestamp{ts(5)}, []float64{5}))
		}))
	ctx := context.Background()
	if err := src.DeclareMetricList(ctx, []string{"test.lease"}); err != nil {
		t.Fatal(err)
	}
	_, lease, err := src.HandOver("test.lease", nil, nil, 10)
	if err != nil || lease.Room != 1 {
		t.Fatalf("lease with a buffer of 3 = %+v, %v; want its share, 1 point", lease, err)
	}
	batch, values := times(0, 3)
	if err := src.SendLeased("test.lease", batch, values); err != nil {
		t.Fatalf("3 points, 1 leased and 2 free: %v", err)
	}
	if err := src.SendLeased("test.lease", []libmetricq.Timestamp{ts(3)}, []float64{3}); !errors.Is(err, libmetricq.ErrNoRoom) {
		t.Fatalf("a point with the buffer full: %v", err)
	}
	ended, cancel := context.WithCancel(ctx)
	cancel()
	if err := src.AwaitRoom(ended, "test.lease", 1); err == nil {
		t.Fatal("AwaitRoom with a full buffer and an ended context succeeded")
	}
	if err := src.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	expectPoints(t, next(t, sink), "test.lease", 0, 3)
	if err := src.AwaitRoom(ctx, "test.lease", 2); err != nil {
		t.Fatal(err)
	}
	if err := src.SendLeased("test.lease", []libmetricq.Timestamp{ts(3)}, []float64{3}); err != nil {
		t.Fatalf("a point with its space awaited: %v", err)
	}
	// 1 of the awaited space is left for the hook's staged point.
	if err := src.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if len(inHook) != 2 || !errors.Is(inHook[0], libmetricq.ErrStopped) || !errors.Is(inHook[1], libmetricq.ErrStopped) {
		t.Fatalf("in the hook: hand-over %v (staged taken, no new lease), new point %v (refused)", inHook[0], inHook[1])
	}
	expectPoints(t, next(t, sink), "test.lease", 3, 2)
	if st := src.Stats(); st.PointsAccepted != 5 || st.BufferedPoints != 0 {
		t.Fatalf("after stop: accepted %d, buffered %d; want 5, 0", st.PointsAccepted, st.BufferedPoints)
	}
	if _, _, err := src.HandOver("test.lease", nil, nil, 1); !errors.Is(err, libmetricq.ErrStopped) {
		t.Fatalf("lease after stop: %v", err)
	}
}
