package libmetricq

// The point path: what Send and its kin accept, how points wait in their
// metric's open chunk and the bounded buffer, and Flush.

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"
)

// logBufferFull reports that Sends wait for buffer space: at most one line
// every 10 s, so that a full buffer is visible but does not flood the log.
func (s *Source) logBufferFull() {
	if !logDue(&s.fullLogged) {
		return
	}
	s.log.Warn("buffer full: Send waits for the broker to confirm buffered points, and fails with a timeout if none are",
		"max_buffered_points", s.budget.limit.Load(), "data_connected", s.stats.dataUp.Load(),
		"broker_blocking", s.stats.blocked.Load(), "waits_so_far", s.stats.bufferFullWaits.Load())
}

// logDue tells whether a repeated warning may be logged now: at most once
// every 10 s per last (unix ns of the line logged last), so that a lasting
// condition is visible but does not flood the log.
func logDue(last *atomic.Int64) bool {
	now := time.Now().UnixNano()
	then := last.Load()
	return now-then >= int64(10*time.Second) && last.CompareAndSwap(then, now)
}

// metric returns the metric's buffer, creating it with the source's current
// default chunk size.
func (s *Source) metric(name string) *metric {
	return s.metrics.getOrCreate(name, int(s.defaultChunkSize.Load()))
}

// ChunkSize returns the default chunk size for metrics created from now on.
func (s *Source) ChunkSize() int { return int(s.defaultChunkSize.Load()) }

// SetChunkSize sets the chunk size used by metrics first seen from now on:
// a chunk is published as soon as a metric has n points buffered.
// ChunkSizeManual (0) means only Flush publishes. The default is 1. A
// chunk size above the buffer bound (see SetMaxBufferedPoints) is refused:
// such a chunk could never fill.
func (s *Source) SetChunkSize(n int) error {
	if err := s.checkChunkSize(n); err != nil {
		return err
	}
	s.defaultChunkSize.Store(int64(n))
	return nil
}

func (s *Source) checkChunkSize(n int) error {
	if err := validateChunkSize(n); err != nil {
		return err
	}
	if limit := s.budget.limit.Load(); int64(n) > limit {
		return fmt.Errorf("%w: chunk size %d exceeds the buffer of %d points and could never fill", ErrInvalid, n, limit)
	}
	return nil
}

// MaxBufferedPoints is the bound of points held until the broker confirms
// them.
func (s *Source) MaxBufferedPoints() int { return int(s.budget.limit.Load()) }

// SetMetricChunkSize sets one metric's chunk size (see SetChunkSize). If the
// metric already holds n points or more, they are published now.
func (s *Source) SetMetricChunkSize(metric string, n int) error {
	if err := ValidateMetricName(metric); err != nil {
		return err
	}
	if err := s.checkChunkSize(n); err != nil {
		return &MetricError{Metric: metric, Err: err}
	}
	m := s.metric(metric)
	m.mu.Lock()
	m.setChunkSize(s.pub(), n)
	if m.declared {
		s.countChunk(m)
	}
	m.mu.Unlock()
	s.fitBound()
	return nil
}

// MetricChunkSize returns a metric's chunk size: the default chunk size for
// a metric not seen yet (asking does not create it).
func (s *Source) MetricChunkSize(metric string) (int, error) {
	if err := ValidateMetricName(metric); err != nil {
		return 0, err
	}
	m := s.metrics.lookup(metric)
	if m == nil {
		return s.ChunkSize(), nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.chunkSize, nil
}

// sendable finds a declared metric for Send.
func (s *Source) sendable(metric string) (*metric, error) {
	m := s.metrics.lookup(metric)
	if m == nil {
		if err := ValidateMetricName(metric); err != nil {
			return nil, err
		}
		return nil, s.undeclaredErr(metric)
	}
	return m, nil
}

// undeclaredErr is the error of a point for a metric that is not declared:
// it says so, unless no metric can take points yet or any more.
func (s *Source) undeclaredErr(metric string) error {
	if s.stopped.Load() {
		return s.stoppedErr()
	}
	if s.pub() == nil {
		return s.notConnectedErr()
	}
	return &MetricError{Metric: metric, Err: ErrUndeclared}
}

// Send accepts one point. It never waits for the network: the point is
// buffered and published with its chunk. It waits (until ctx ends) only when
// the buffer bound is reached. An error means the point was not accepted,
// so retrying it creates no duplicate. Timestamps of a metric must strictly
// increase. A Metric handle sends the same way without finding the metric
// by its name first.
func (s *Source) Send(ctx context.Context, metric string, t Timestamp, value float64) error {
	m, err := s.sendable(metric)
	if err != nil {
		return err
	}
	return s.send(ctx, m, t, value)
}

// send is Send once the metric is found, by name or by handle.
func (s *Source) send(ctx context.Context, m *metric, t Timestamp, value float64) error {
	if err := s.budget.acquire(ctx, 1, &s.stats); err != nil {
		return s.budgetErr(m.name, err)
	}
	m.mu.Lock()
	if err := s.admit(m, int64(t)); err != nil {
		m.mu.Unlock()
		s.budget.release(1)
		return err
	}
	m.add(s.pub(), int64(t), value)
	m.accepted++
	m.mu.Unlock()
	return nil
}

func (s *Source) budgetErr(metric string, err error) error {
	if errors.Is(err, errBudgetStopped) {
		return s.stoppedErr()
	}
	return &MetricError{Metric: metric, Err: err}
}

// admit checks, under m.mu, whether a point at time first may be added.
func (s *Source) admit(m *metric, first int64) error {
	if err := s.takesPoints(m); err != nil {
		return err
	}
	return m.follows(first)
}

// takesPoints checks, under m.mu, whether the metric takes points at all.
func (s *Source) takesPoints(m *metric) error {
	if s.stopped.Load() {
		return s.stoppedErr()
	}
	if !m.declared {
		return s.undeclaredErr(m.name)
	}
	return nil
}

// SendBatch accepts several points of one metric, all or none. times must
// strictly increase and start after the metric's last accepted timestamp.
func (s *Source) SendBatch(ctx context.Context, metric string, times []Timestamp, values []float64) error {
	m, err := s.batchable(metric, times, values)
	if err != nil || m == nil {
		return err
	}
	return s.sendBatch(ctx, m, times, values)
}

// sendBatch is SendBatch once the metric is found and the batch checked
// (checkBatch), not empty.
func (s *Source) sendBatch(ctx context.Context, m *metric, times []Timestamp, values []float64) error {
	if err := s.budget.acquire(ctx, len(times), &s.stats); err != nil {
		return s.budgetErr(m.name, err)
	}
	if err := s.appendBatch(m, times, values); err != nil {
		s.budget.release(len(times))
		return err
	}
	return nil
}

// batchable finds the metric of a batch and checks what does not depend
// on its state; a nil metric with a nil error means an empty batch.
func (s *Source) batchable(metric string, times []Timestamp, values []float64) (*metric, error) {
	if err := checkLengths(metric, times, values); err != nil {
		return nil, err
	}
	m, err := s.sendable(metric)
	if err == nil {
		err = checkBatch(metric, times, values)
	}
	if err != nil || len(times) == 0 {
		return nil, err
	}
	return m, nil
}

// checkBatch checks what a batch must be whatever its metric's state: as
// many values as timestamps, the timestamps strictly increasing.
func checkBatch(metric string, times []Timestamp, values []float64) error {
	if err := checkLengths(metric, times, values); err != nil {
		return err
	}
	for i := 1; i < len(times); i++ {
		if times[i] <= times[i-1] {
			return &MetricError{Metric: metric, Err: fmt.Errorf("%w: batch timestamp %d (%d ns) is not after the one before (%d ns)", ErrOrder, i, times[i], times[i-1])}
		}
	}
	return nil
}

// checkLengths refuses points whose timestamps and values do not pair up.
func checkLengths(metric string, times []Timestamp, values []float64) error {
	if len(times) != len(values) {
		return &MetricError{Metric: metric, Err: fmt.Errorf("%w: %d timestamps but %d values", ErrInvalid, len(times), len(values))}
	}
	return nil
}

// appendBatch adds a checked batch whose buffer space is taken, sealing
// chunks as they fill.
func (s *Source) appendBatch(m *metric, times []Timestamp, values []float64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := s.admit(m, int64(times[0])); err != nil {
		return err
	}
	m.addBatch(s.pub(), timestampsAsInt64(times), values)
	m.accepted += uint64(len(times))
	return nil
}

// Metric is a handle on one metric of a source, for sending without a
// lookup by name: a program that sends to many metrics keeps a handle per
// metric (Source.Metric) and sends through it. Sending by handle is
// sending by name in every other respect: the same checks, errors,
// buffering and order. A handle stays valid for the source's life, across
// reconnects, and may be used from many goroutines at once.
type Metric struct {
	src *Source
	m   *metric
}

// Metric returns a handle on the named metric. Only the name is checked:
// the metric need not be declared yet (sends by the handle fail with
// ErrUndeclared until it is), nor the source connected. A metric new to
// the source is created here, with the default chunk size, and laid out
// in memory after those created before it (see DeclareMetrics).
func (s *Source) Metric(name string) (*Metric, error) {
	if err := ValidateMetricName(name); err != nil {
		return nil, err
	}
	return &Metric{src: s, m: s.metric(name)}, nil
}

// Name is the metric's name.
func (h *Metric) Name() string { return h.m.name }

// Send accepts one point, as Source.Send does.
func (h *Metric) Send(ctx context.Context, t Timestamp, value float64) error {
	return h.src.send(ctx, h.m, t, value)
}

// SendBatch accepts several points, all or none, as Source.SendBatch does.
func (h *Metric) SendBatch(ctx context.Context, times []Timestamp, values []float64) error {
	if err := checkBatch(h.m.name, times, values); err != nil || len(times) == 0 {
		return err
	}
	return h.src.sendBatch(ctx, h.m, times, values)
}

func (s *Source) sealAll() {
	pub := s.pub()
	s.metrics.each(func(m *metric) {
		m.mu.Lock()
		m.seal(pub)
		m.mu.Unlock()
	})
}

// Flush publishes every buffered point and returns once the broker has
// confirmed all points accepted before the call. When ctx ends first, the
// points stay buffered and are published later.
func (s *Source) Flush(ctx context.Context) error {
	if s.stopped.Load() {
		return s.stoppedErr()
	}
	if err := s.usable(); err != nil {
		return err
	}
	s.sealAll()
	pub := s.pub()
	if err := pub.waitConfirmed(ctx, pub.lastSealed()); err != nil {
		if s.stopped.Load() {
			return s.stoppedErr()
		}
		return fmt.Errorf("flush: %w", err)
	}
	return nil
}

// timestampsAsInt64 views timestamps as their int64 nanoseconds (the same
// memory), so that a batch is copied in one go.
func timestampsAsInt64(ts []Timestamp) []int64 {
	return unsafe.Slice((*int64)(unsafe.Pointer(unsafe.SliceData(ts))), len(ts))
}
