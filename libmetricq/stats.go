package libmetricq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Stats are a source's counters since it was created. They hold no
// configuration, URL or secret.
type Stats struct {
	PointsAccepted  uint64 // taken by Send/SendBatch
	PointsPublished uint64 // handed to the broker (republished points count again)
	PointsConfirmed uint64 // confirmed by the broker
	ChunksPublished uint64
	ChunksConfirmed uint64
	BytesPublished  uint64
	BufferedPoints  uint64 // accepted, not yet confirmed (nor dropped)
	Reconnects      uint64 // data connections restored after a failure
	PublishErrors   uint64 // failed publishes and broker nacks
	BufferFullWaits uint64 // Sends that had to wait for buffer space
	BlockedEvents   uint64 // times the broker blocked publishing (connection.blocked)
	Blocked         bool   // the broker blocks publishing right now

	// ChunksRepublished counts chunks published again after a lost data
	// connection because their confirmation was missing. Each one may
	// reach a sink twice (see docs/reliability.md).
	ChunksRepublished uint64
	// BufferFullTimeouts counts Sends refused because the buffer stayed full
	// until their context ended (MQ_ERR_TIMEOUT); those points were not
	// accepted.
	BufferFullTimeouts uint64
	// PointsDropped counts accepted points that were never confirmed
	// because the source stopped first (a Stop whose timeout ended during
	// an outage, or a connection that could not be restored).
	PointsDropped uint64
	// ManagementReconnects counts management connections restored (each
	// with a new register and declare).
	ManagementReconnects uint64
	// DataConnected and ManagementConnected tell whether each connection is
	// up right now. Once Stop has returned both are false, also while the
	// connections' close still runs in the background.
	DataConnected       bool
	ManagementConnected bool
}

type counters struct {
	pointsPublished, pointsConfirmed                 atomic.Uint64
	chunksPublished, chunksConfirmed, bytesPublished atomic.Uint64
	reconnects, publishErrors, bufferFullWaits       atomic.Uint64
	blockedEvents                                    atomic.Uint64
	blocked                                          atomic.Bool
	chunksRepublished, bufferFullTimeouts            atomic.Uint64
	pointsDropped, mgmtReconnects                    atomic.Uint64
	dataUp, mgmtUp                                   atomic.Bool
}

// pointBudget bounds the points a source holds. The fast path is one
// compare-and-swap; only a Send that finds the budget exhausted waits on a
// channel. used never exceeds limit, not even for an instant, so a failed
// attempt can't make another Send wait needlessly.
type pointBudget struct {
	used    atomic.Int64
	limit   atomic.Int64 // set before connecting (SetMaxBufferedPoints), then fixed
	waiters atomic.Int32
	mu      sync.Mutex
	freed   chan struct{} // closed and replaced whenever space is freed while someone waits
	stop    <-chan struct{}
	// onFull is called (outside any lock) when a Send starts waiting.
	onFull func()
}

func newPointBudget(limit int) *pointBudget {
	b := &pointBudget{freed: make(chan struct{})}
	b.limit.Store(int64(limit))
	return b
}

func (b *pointBudget) tryAcquire(n int64) bool {
	for {
		used := b.used.Load()
		if used+n > b.limit.Load() {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

// tryAcquireUpTo takes as much of n as is free, without waiting.
func (b *pointBudget) tryAcquireUpTo(n int64) int64 {
	for {
		used := b.used.Load()
		take := min(n, b.limit.Load()-used)
		if take <= 0 {
			return 0
		}
		if b.used.CompareAndSwap(used, used+take) {
			return take
		}
	}
}

// errBudgetStopped is returned by acquire when the source stops while a Send
// waits for space.
var errBudgetStopped = fmt.Errorf("%w: stopped while waiting for buffer space", ErrStopped)

// acquire takes n points of space, waiting until ctx ends (or the source
// stops) if need be.
func (b *pointBudget) acquire(ctx context.Context, n int, stats *counters) error {
	if limit := b.limit.Load(); int64(n) > limit {
		return fmt.Errorf("%w: %d points exceed the buffer of %d points", ErrInvalid, n, limit)
	}
	if b.tryAcquire(int64(n)) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		// Not a wait. A cancelled context asks for space only if there is
		// some now (a first try before waiting): nothing to count. A
		// deadline already past is a send refused without waiting (a
		// non-blocking send): counted and reported as a timeout.
		if errors.Is(err, context.DeadlineExceeded) {
			stats.bufferFullTimeouts.Add(1)
			if b.onFull != nil {
				b.onFull()
			}
		}
		return b.fullErr(err)
	}
	stats.bufferFullWaits.Add(1)
	if b.onFull != nil {
		b.onFull()
	}
	b.waiters.Add(1)
	defer b.waiters.Add(-1)
	for {
		b.mu.Lock()
		freed := b.freed
		b.mu.Unlock()
		if b.tryAcquire(int64(n)) {
			return nil
		}
		select {
		case <-freed:
		case <-b.stop:
			return errBudgetStopped
		case <-ctx.Done():
			// A timeout, not a cancellation (the caller's, or a stop's).
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				stats.bufferFullTimeouts.Add(1)
			}
			return b.fullErr(ctx.Err())
		}
	}
}

func (b *pointBudget) fullErr(cause error) error {
	return fmt.Errorf("buffer full (%d points not yet confirmed by the broker), point not accepted: %w", b.limit.Load(), cause)
}

func (b *pointBudget) release(n int) {
	b.used.Add(-int64(n))
	if b.waiters.Load() > 0 {
		b.mu.Lock()
		close(b.freed)
		b.freed = make(chan struct{})
		b.mu.Unlock()
	}
}

// Stats returns the source's counters.
func (s *Source) Stats() Stats {
	return Stats{
		PointsAccepted:  s.pointsAccepted(),
		PointsPublished: s.stats.pointsPublished.Load(),
		PointsConfirmed: s.stats.pointsConfirmed.Load(),
		ChunksPublished: s.stats.chunksPublished.Load(),
		ChunksConfirmed: s.stats.chunksConfirmed.Load(),
		BytesPublished:  s.stats.bytesPublished.Load(),
		BufferedPoints:  uint64(max(s.budget.used.Load(), 0)),
		Reconnects:      s.stats.reconnects.Load(),
		PublishErrors:   s.stats.publishErrors.Load(),
		BufferFullWaits: s.stats.bufferFullWaits.Load(),
		BlockedEvents:   s.stats.blockedEvents.Load(),
		Blocked:         s.stats.blocked.Load(),

		ChunksRepublished:    s.stats.chunksRepublished.Load(),
		BufferFullTimeouts:   s.stats.bufferFullTimeouts.Load(),
		PointsDropped:        s.stats.pointsDropped.Load(),
		ManagementReconnects: s.stats.mgmtReconnects.Load(),
		DataConnected:        s.stats.dataUp.Load() && !s.settled.Load(),
		ManagementConnected:  s.stats.mgmtUp.Load() && !s.settled.Load(),
	}
}

func (s *Source) pointsAccepted() uint64 {
	var n uint64
	s.metrics.each(func(m *metric) {
		m.mu.Lock()
		n += m.accepted
		m.mu.Unlock()
	})
	return n
}
