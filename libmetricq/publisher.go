package libmetricq

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// chunk is a sealed run of points of one metric, with absolute timestamps;
// the deltas are computed when it is encoded.
type chunk struct {
	metric string
	times  []int64
	values []float64
	seq    uint64 // position in the publisher's queue order
}

// maxPooledCapacity keeps a metric with a huge chunk size from pinning huge
// arrays in the pool.
const maxPooledCapacity = 1 << 16

var chunkPool = sync.Pool{New: func() any { return new(chunk) }}

func newChunk(metric string, capacity int) *chunk {
	c := chunkPool.Get().(*chunk)
	c.metric = metric
	if capacity > maxPooledCapacity {
		capacity = maxPooledCapacity
	}
	if cap(c.times) < capacity {
		c.times = make([]int64, 0, capacity)
		c.values = make([]float64, 0, capacity)
	}
	return c
}

func recycleChunk(c *chunk) {
	if cap(c.times) > maxPooledCapacity {
		return
	}
	c.times, c.values, c.metric, c.seq = c.times[:0], c.values[:0], "", 0
	chunkPool.Put(c)
}

// publisher owns the data connection. Sealed chunks queue up in order; one
// goroutine publishes them on a channel in confirm mode and keeps each until
// the broker confirms it. When the connection fails, every unconfirmed chunk
// goes back to the head of the queue, in order, and is published again after
// reconnecting: nothing accepted is lost, and per metric the order holds.
type publisher struct {
	url      string
	exchange string
	name     string
	log      *slog.Logger
	stats    *counters
	// confirmed is told how many points the broker has taken, to free
	// buffer space.
	confirmed func(points int)
	// After reconnectTimeout without a connection, fatal stops the source.
	reconnectTimeout time.Duration
	fatal            func(error)

	mu           sync.Mutex
	queue        []*chunk // sealed, not yet published
	inflight     []*chunk // published on the current channel, unconfirmed
	sealedSeq    uint64   // seq of the last chunk enqueued
	confirmedSeq uint64   // every chunk with seq <= this is confirmed
	lastErr      error    // the last publish or connect failure, nil once healthy
	progress     chan struct{}
	closing      bool

	wake chan struct{}
	done chan struct{}
}

func newPublisher(url, exchange, token string, log *slog.Logger, stats *counters, confirmed func(int)) *publisher {
	return &publisher{
		url:       url,
		exchange:  exchange,
		name:      "data connection " + token,
		log:       log,
		stats:     stats,
		confirmed: confirmed,
		progress:  make(chan struct{}),
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
}

// session is one connection and its confirm-mode channel.
type session struct {
	conn     *amqp.Connection
	ch       *amqp.Channel
	closed   chan *amqp.Error
	confirms chan amqp.Confirmation
	drained  chan struct{} // closed once every confirmation has been handled
}

// start opens the first session, so that connect errors reach the caller,
// then publishes in the background.
func (p *publisher) start(ctx context.Context) error {
	s, err := p.open(ctx)
	if err != nil {
		return err
	}
	go p.run(s)
	return nil
}

func (p *publisher) open(ctx context.Context) (*session, error) {
	conn, err := dial(ctx, p.url, p.name)
	if err != nil {
		return nil, err
	}
	if err := checkExchanges(conn, p.exchange); err != nil {
		conn.Close()
		return nil, err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: data channel: %v", ErrConnect, err)
	}
	s := &session{
		conn:     conn,
		ch:       ch,
		closed:   conn.NotifyClose(make(chan *amqp.Error, 1)),
		confirms: ch.NotifyPublish(make(chan amqp.Confirmation, 1024)),
		drained:  make(chan struct{}),
	}
	go func() {
		defer close(s.drained)
		for c := range s.confirms {
			p.confirm(s, c)
		}
	}()
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	go func() {
		for b := range blocked {
			p.stats.blocked.Store(b.Active)
			if b.Active {
				p.stats.blockedEvents.Add(1)
				p.log.Warn("broker blocks publishing (flow control): points stay buffered", "reason", b.Reason)
			} else {
				p.log.Info("broker unblocked publishing")
			}
		}
		p.stats.blocked.Store(false)
	}()
	return s, nil
}

// enqueue hands a sealed chunk over. The caller holds the metric's lock, so
// a metric's chunks enter the queue in the order they were sealed.
func (p *publisher) enqueue(c *chunk) {
	p.mu.Lock()
	p.sealedSeq++
	c.seq = p.sealedSeq
	p.queue = append(p.queue, c)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// lastSealed is the seq a flush waits for.
func (p *publisher) lastSealed() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sealedSeq
}

// run publishes until close; it alone touches the session.
func (p *publisher) run(s *session) {
	defer close(p.done)
	buf := make([]byte, 0, 64*1024)
	backoff := 100 * time.Millisecond
	var downSince time.Time
	for {
		if s == nil {
			if downSince.IsZero() {
				downSince = time.Now()
			}
			var err error
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			s, err = p.open(ctx)
			cancel()
			if err != nil {
				p.setErr(err)
				if time.Since(downSince) > p.reconnectTimeout {
					p.fatal(fmt.Errorf("%w: data connection not restored within %v: %v", ErrConnect, p.reconnectTimeout, err))
					return
				}
				p.log.Warn("data connection failed, retrying", "in", backoff, "error", err)
				if !p.sleep(backoff) {
					return
				}
				backoff = min(2*backoff, 5*time.Second)
				continue
			}
			downSince = time.Time{}
			p.stats.reconnects.Add(1)
			p.log.Info("data connection restored")
			backoff = 100 * time.Millisecond
		}
		p.mu.Lock()
		if p.closing {
			p.mu.Unlock()
			p.endSession(s)
			return
		}
		if len(p.queue) == 0 {
			p.mu.Unlock()
			select {
			case <-p.wake:
			case <-s.closed:
				p.endSession(s)
				s = nil
			}
			continue
		}
		c := p.queue[0]
		p.queue[0] = nil
		p.queue = p.queue[1:]
		p.inflight = append(p.inflight, c)
		p.mu.Unlock()

		// c may be confirmed and recycled as soon as Publish has sent it.
		points := len(c.times)
		buf = appendDataChunk(buf[:0], c.times, c.values)
		err := s.ch.Publish(p.exchange, c.metric, false, false, amqp.Publishing{
			DeliveryMode: amqp.Transient,
			Body:         buf,
		})
		if err != nil {
			p.stats.publishErrors.Add(1)
			p.setErr(fmt.Errorf("%w: %v", ErrPublish, err))
			p.log.Warn("publish failed, reconnecting", "metric", c.metric, "error", err)
			p.endSession(s)
			s = nil
			continue
		}
		p.stats.chunksPublished.Add(1)
		p.stats.pointsPublished.Add(uint64(points))
		p.stats.bytesPublished.Add(uint64(len(buf)))
	}
}

// endSession closes a session and, once its last confirmation has been
// handled, puts every unconfirmed chunk back at the head of the queue.
func (p *publisher) endSession(s *session) {
	_ = s.conn.Close()
	<-s.drained
	p.mu.Lock()
	if len(p.inflight) > 0 {
		p.queue = append(p.inflight, p.queue...)
		p.inflight = nil
	}
	p.mu.Unlock()
}

func (p *publisher) confirm(s *session, c amqp.Confirmation) {
	if !c.Ack {
		// The broker could not take the message. Republishing it alone would
		// reorder it behind later chunks of the same metric, so the whole
		// session restarts and republishes everything unconfirmed in order.
		p.stats.publishErrors.Add(1)
		p.setErr(fmt.Errorf("%w: broker rejected (nack) a chunk", ErrPublish))
		p.log.Warn("broker nacked a chunk; republishing everything unconfirmed")
		go s.conn.Close()
		return
	}
	p.mu.Lock()
	if len(p.inflight) == 0 {
		p.mu.Unlock()
		return
	}
	done := p.inflight[0]
	p.inflight[0] = nil
	p.inflight = p.inflight[1:]
	p.confirmedSeq = done.seq
	p.lastErr = nil
	close(p.progress)
	p.progress = make(chan struct{})
	p.mu.Unlock()

	points := len(done.times)
	p.stats.chunksConfirmed.Add(1)
	p.stats.pointsConfirmed.Add(uint64(points))
	p.confirmed(points)
	recycleChunk(done)
}

func (p *publisher) setErr(err error) {
	p.mu.Lock()
	p.lastErr = err
	close(p.progress)
	p.progress = make(chan struct{})
	p.mu.Unlock()
}

// sleep waits d unless the publisher is closing.
func (p *publisher) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return true
		case <-p.wake:
			p.mu.Lock()
			closing := p.closing
			p.mu.Unlock()
			if closing {
				return false
			}
		}
	}
}

// waitConfirmed returns once every chunk up to seq is confirmed by the
// broker. When ctx ends first, the error says whether publishing is failing
// (ErrPublish) or merely slow (a timeout).
func (p *publisher) waitConfirmed(ctx context.Context, seq uint64) error {
	for {
		p.mu.Lock()
		confirmed, lastErr, progress := p.confirmedSeq, p.lastErr, p.progress
		pending := len(p.queue) + len(p.inflight)
		p.mu.Unlock()
		if confirmed >= seq {
			return nil
		}
		select {
		case <-progress:
		case <-p.done:
			return fmt.Errorf("%w: data connection closed with %d chunks unconfirmed", ErrStopped, pending)
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("%d chunks not confirmed: %w (%w)", pending, lastErr, ctx.Err())
			}
			return fmt.Errorf("%d chunks not confirmed by the broker: %w", pending, ctx.Err())
		}
	}
}

// close stops publishing and closes the connection. What is still queued
// stays unpublished; Stop flushes before calling it.
func (p *publisher) close() {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	<-p.done
}

// unconfirmedPoints counts what the broker has not confirmed yet.
func (p *publisher) unconfirmedPoints() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.queue {
		n += len(c.times)
	}
	for _, c := range p.inflight {
		n += len(c.times)
	}
	return n
}
