package libmetricq

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// Stats are a source's counters since it was created.
type Stats struct {
	PointsAccepted  uint64 // taken by Send/SendBatch
	PointsPublished uint64 // handed to the broker (republished points count again)
	PointsConfirmed uint64 // confirmed by the broker
	ChunksPublished uint64
	ChunksConfirmed uint64
	BytesPublished  uint64
	BufferedPoints  uint64 // accepted, not yet confirmed
	Reconnects      uint64 // data connections restored after a failure
	PublishErrors   uint64 // failed publishes and broker nacks
	BufferFullWaits uint64 // Sends that had to wait for buffer space
	BlockedEvents   uint64 // times the broker blocked publishing (connection.blocked)
	Blocked         bool   // the broker blocks publishing right now
}

type counters struct {
	pointsAccepted, pointsPublished, pointsConfirmed atomic.Uint64
	chunksPublished, chunksConfirmed, bytesPublished atomic.Uint64
	reconnects, publishErrors, bufferFullWaits       atomic.Uint64
	blockedEvents                                    atomic.Uint64
	blocked                                          atomic.Bool
}

// pointBudget bounds the points a source holds. The fast path is one atomic
// add; only a Send that finds the budget exhausted waits on a channel.
type pointBudget struct {
	used    atomic.Int64
	limit   int64
	waiters atomic.Int32
	mu      sync.Mutex
	freed   chan struct{} // closed and replaced whenever space is freed while someone waits
}

func newPointBudget(limit int) *pointBudget {
	return &pointBudget{limit: int64(limit), freed: make(chan struct{})}
}

// acquire takes n points of space, waiting until ctx ends if need be.
func (b *pointBudget) acquire(ctx context.Context, n int, stats *counters) error {
	if int64(n) > b.limit {
		return fmt.Errorf("%w: %d points exceed the buffer of %d points", ErrInvalid, n, b.limit)
	}
	if b.used.Add(int64(n)) <= b.limit {
		return nil
	}
	b.used.Add(-int64(n))
	stats.bufferFullWaits.Add(1)
	b.waiters.Add(1)
	defer b.waiters.Add(-1)
	for {
		b.mu.Lock()
		freed := b.freed
		b.mu.Unlock()
		if b.used.Add(int64(n)) <= b.limit {
			return nil
		}
		b.used.Add(-int64(n))
		select {
		case <-freed:
		case <-ctx.Done():
			return fmt.Errorf("buffer full (%d points unconfirmed): %w", b.limit, ctx.Err())
		}
	}
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
