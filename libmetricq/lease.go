package libmetricq

import (
	"context"
	"errors"
	"fmt"
)

// Staging in front of the Source. A layer may hold a metric's points for a
// while and hand them over in batches: the C library does, because a call
// from C into Go costs more than everything else a point needs. The
// Source keeps every rule, and the layer only storage: the Source grants
// it a Lease per metric (room for so many points, with their buffer space
// reserved, no more than the open chunk still lacks, and the timestamp
// they must follow), takes the staged points with HandOver, counting them
// as accepted then, and answers with the next lease. A point that does not
// fit the lease, or a batch, goes through SendLeased, which checks it as
// SendBatch does. When the source stops, WithBeforeStop runs after it
// stopped taking points, and the layer hands over what it still holds.

// Lease is what a staging layer may do with a metric until its next
// HandOver.
type Lease struct {
	// Room is how many points may be staged; their buffer space is
	// reserved. 0: none; ask again with HandOver (or AwaitRoom when the
	// buffer is full).
	Room int
	// After is the timestamp the first staged point must be later than,
	// if HasAfter; each further one must be later than the one staged
	// before it. (The rule is the Source's: points not after the last
	// accepted one are refused.) A point that does not fit goes to
	// SendLeased, which gives the verdict.
	After    Timestamp
	HasAfter bool
}

// ErrNoRoom is SendLeased's refusal of points whose buffer space is
// neither in the metric's lease nor free now: reserve it with AwaitRoom,
// then send again.
var ErrNoRoom = errors.New("no buffer space reserved for these points")

// leaseShare bounds one metric's lease to 1/leaseShare of the buffer, so
// that space reserved ahead of use leaves room for the other metrics.
const leaseShare = 64

// HandOver takes the points a layer staged under the metric's lease (in
// order and after the lease's After: staged by the lease, so not checked
// again; their space is the lease's) and returns how many it took and the
// metric's next lease, with room for up to want points. want 0 gives the
// lease's space back. Staged points are always taken, and count as
// accepted now, also once the source stopped: only a metric the Source
// does not know (which has no lease, so nothing staged) takes none. An
// error says why there is no new lease (stopped, undeclared).
func (s *Source) HandOver(metric string, times []Timestamp, values []float64, want int) (taken int, next Lease, err error) {
	if err := checkLengths(metric, times, values); err != nil {
		return 0, Lease{}, err
	}
	m, err := s.sendable(metric)
	if err != nil {
		return 0, Lease{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if taken = len(times); taken > 0 {
		m.addBatch(s.pub(), timestampsAsInt64(times), values)
		m.leased -= taken
		m.accepted += uint64(taken)
	}
	if err := s.takesPoints(m); err != nil || want <= 0 {
		s.endLease(m)
		return taken, Lease{}, err
	}
	return taken, s.renewLease(m, want), nil
}

// renewLease is the metric's next lease, under m.mu: room for up to want
// points, never more than the open chunk lacks (the point that fills a
// chunk is then handed over with it, and the chunk sealed there), nor than
// its share of the buffer, nor than the space free now. The share shrinks
// with the number of metrics, so that all leases together stay within half
// the buffer: otherwise, with 100,000 metrics, leases taken ahead would
// use the buffer up after a few thousand metrics, and every further
// metric's first point would wait for space and make the layer reclaim
// unused leases from every metric, O(N) work per point.
func (s *Source) renewLease(m *metric, want int) Lease {
	limit := int(s.budget.limit.Load())
	room := min(want, max(1, limit/leaseShare), max(1, limit/(2*max(1, s.metrics.len()))))
	if m.chunkSize != ChunkSizeManual {
		room = min(room, m.chunkSize-m.openPoints())
	}
	if m.leased < room {
		m.leased += int(s.budget.tryAcquireUpTo(int64(room - m.leased)))
	}
	return Lease{Room: min(room, m.leased), After: Timestamp(m.last), HasAfter: m.hasLast}
}

// endLease gives the lease's space back, under m.mu.
func (s *Source) endLease(m *metric) {
	if m.leased > 0 {
		s.budget.release(m.leased)
		m.leased = 0
	}
}

// endLeases gives back every lease's space once no layer hands points
// over any more.
func (s *Source) endLeases() {
	s.metrics.each(func(m *metric) {
		m.mu.Lock()
		s.endLease(m)
		m.mu.Unlock()
	})
}

// SendLeased accepts points a layer did not stage (a batch, or a point that
// did not fit the lease), all or none, with SendBatch's checks. Their space
// comes from the metric's lease, or is reserved now without waiting; if
// neither has it, ErrNoRoom. The layer's lease ends: its next staged point
// needs a new one.
func (s *Source) SendLeased(metric string, times []Timestamp, values []float64) error {
	m, err := s.batchable(metric, times, values)
	if err != nil || m == nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := s.admit(m, int64(times[0])); err != nil {
		return err
	}
	n := len(times)
	if m.leased < n {
		m.leased += int(s.budget.tryAcquireUpTo(int64(n - m.leased)))
	}
	if m.leased < n {
		return &MetricError{Metric: metric, Err: ErrNoRoom}
	}
	m.addBatch(s.pub(), timestampsAsInt64(times), values)
	m.leased -= n
	m.accepted += uint64(n)
	return nil
}

// AwaitRoom reserves buffer space until the metric's lease holds n points,
// waiting until ctx ends if the buffer is full (counted, and refused, as a
// Send waiting for space is).
func (s *Source) AwaitRoom(ctx context.Context, metric string, n int) error {
	m, err := s.sendable(metric)
	if err != nil {
		return err
	}
	if n < 1 {
		return &MetricError{Metric: metric, Err: fmt.Errorf("%w: cannot reserve %d points", ErrInvalid, n)}
	}
	m.mu.Lock()
	need := max(1, n-m.leased)
	m.mu.Unlock()
	if err := s.budget.acquire(ctx, need, &s.stats); err != nil {
		return s.budgetErr(metric, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leased += need
	if err := s.takesPoints(m); err != nil {
		s.endLease(m)
		return err
	}
	return nil
}
