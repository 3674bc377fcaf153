package libmetricq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
)

// publisher owns the data connection. Sealed chunks queue up in order; one
// goroutine publishes them on a channel in confirm mode and keeps each until
// the broker confirms it. When the connection or channel fails, every
// unconfirmed chunk goes back to the head of the queue, in order, and is
// published again after reconnecting: nothing accepted is lost, and per
// metric the order holds.
//
// Duplicates: a chunk is published again only when its confirmation is
// missing. If the broker had routed it but the connection died before its
// basic.ack reached us, a sink gets that chunk twice: the same routing key
// and the same bytes, after the original and after every chunk of the same
// metric published before the loss, and before any chunk sealed after the
// loss. A chunk once confirmed is never published again. See
// docs/reliability.md.
type publisher struct {
	url      string
	exchange string
	name     string
	settings connSettings
	log      *slog.Logger
	stats    *counters
	// confirmed is told how many points the broker has taken, to free
	// buffer space.
	confirmed func(points int)
	// After reconnectTimeout without a connection, fatal stops the source.
	reconnectTimeout time.Duration
	fatal            func(error)
	// onRepublish, when set (tests), sees each chunk put back for
	// republishing.
	onRepublish func(metric string, times []int64, values []float64)

	ctx    context.Context // cancelled by close: aborts a dial in progress
	cancel context.CancelFunc

	mu           sync.Mutex
	queue        []*chunk // sealed, not yet published
	inflight     []*chunk // published on the current session, unconfirmed, in tag order
	unconfirmed  int      // points in queue and inflight
	sealedSeq    uint64   // seq of the last chunk enqueued
	confirmedSeq uint64   // every chunk with seq <= this is confirmed
	lastErr      error    // the last publish or connect failure, nil once healthy
	progress     chan struct{}
	closing      bool
	abandoned    bool     // stopped for good; nothing unconfirmed is kept
	current      *session // the session run uses, nil while reconnecting

	wake chan struct{}
	done chan struct{}
}

func newPublisher(url, exchange, token string, settings connSettings, log *slog.Logger, stats *counters, confirmed func(int)) *publisher {
	ctx, cancel := context.WithCancel(context.Background())
	return &publisher{
		url:       url,
		exchange:  exchange,
		name:      "data connection " + token,
		settings:  settings,
		log:       log,
		stats:     stats,
		confirmed: confirmed,
		ctx:       ctx,
		cancel:    cancel,
		progress:  make(chan struct{}),
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
}

// session is one connection and its confirm-mode channel.
type session struct {
	conn     *amqp.Connection
	ch       *amqp.Channel
	confirms chan amqp.Confirmation
	drained  chan struct{} // closed once every confirmation has been handled
	flow     chan struct{} // signalled when the broker blocks or unblocks

	dead     chan struct{} // closed when the connection or the channel is gone
	deadOnce sync.Once
	reason   error // why it died; written before dead is closed

	// Guarded by publisher.mu.
	published uint64 // delivery tags handed out
	blocked   bool   // connection.blocked is in force
	poisoned  bool   // confirmations are no longer trusted (nack, gap, ended)
}

func (s *session) die(reason error) {
	s.deadOnce.Do(func() {
		s.reason = reason
		close(s.dead)
	})
}

// start opens the first session, so that connect errors reach the caller,
// then publishes in the background.
func (p *publisher) start(ctx context.Context) error {
	s, err := p.open(ctx)
	if err != nil {
		return err
	}
	p.stats.dataUp.Store(true)
	go p.run(s)
	return nil
}

func (p *publisher) open(ctx context.Context) (*session, error) {
	conn, err := dial(ctx, p.url, p.name, p.settings)
	if err != nil {
		return nil, err
	}
	if err := amqpkit.CheckExchanges(conn, p.exchange); err != nil {
		amqpkit.Close(conn)
		return nil, err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		amqpkit.Close(conn)
		return nil, fmt.Errorf("%w: data channel: %v", ErrConnect, err)
	}
	s := &session{
		conn:     conn,
		ch:       ch,
		confirms: ch.NotifyPublish(make(chan amqp.Confirmation, 1024)),
		drained:  make(chan struct{}),
		flow:     make(chan struct{}, 1),
		dead:     make(chan struct{}),
	}
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
	chClosed := ch.NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		var e *amqp.Error
		what := "connection"
		select {
		case e = <-connClosed:
		case e = <-chClosed:
			what = "channel"
		}
		reason := fmt.Errorf("data %s closed", what)
		if e != nil {
			reason = fmt.Errorf("data %s closed by the broker: %v", what, e)
		}
		s.die(reason)
	}()
	go func() {
		defer close(s.drained)
		for c := range s.confirms {
			p.confirm(s, c)
		}
	}()
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	go func() {
		for b := range blocked {
			p.mu.Lock()
			s.blocked = b.Active
			p.mu.Unlock()
			p.stats.blocked.Store(b.Active)
			if b.Active {
				p.stats.blockedEvents.Add(1)
				p.log.Warn("broker blocks publishing (flow control, connection.blocked): points stay buffered; Send waits once the buffer is full", "reason", b.Reason)
			} else {
				p.log.Warn("broker unblocked publishing")
			}
			select {
			case s.flow <- struct{}{}:
			default:
			}
		}
	}()
	return s, nil
}

// enqueue hands a sealed chunk over. The caller holds the metric's lock, so
// a metric's chunks enter the queue in the order they were sealed.
func (p *publisher) enqueue(c *chunk) {
	p.mu.Lock()
	if p.abandoned {
		p.mu.Unlock()
		points := len(c.times)
		p.stats.pointsDropped.Add(uint64(points))
		p.confirmed(points) // frees the buffer space as a confirmation would
		recycleChunk(c)
		return
	}
	p.sealedSeq++
	c.seq = p.sealedSeq
	p.queue = append(p.queue, c)
	p.unconfirmed += len(c.times)
	p.mu.Unlock()
	p.poke()
}

func (p *publisher) poke() {
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

// run publishes until close; it alone publishes on the session.
func (p *publisher) run(s *session) {
	defer close(p.done)
	defer p.stats.dataUp.Store(false)
	p.mu.Lock()
	p.current = s
	p.mu.Unlock()
	buf := make([]byte, 0, 64*1024)
	for {
		if s == nil {
			var next *session
			err := restoreConnection(p.ctx, "data connection", p.reconnectTimeout, p.log, func(ctx context.Context) error {
				var err error
				if next, err = p.open(ctx); err != nil {
					p.setErr(fmt.Errorf("%w: data connection down: %v", ErrPublish, err))
				}
				return err
			})
			if p.isClosing() {
				if next != nil {
					p.endSession(next)
				}
				return
			}
			if err != nil {
				p.fatal(err)
				return
			}
			s = next
			p.mu.Lock()
			p.current = s
			republish := len(p.queue)
			p.mu.Unlock()
			p.stats.reconnects.Add(1)
			p.stats.dataUp.Store(true)
			p.log.Info("data connection restored", "queued_chunks", republish)
		}
		p.mu.Lock()
		if p.closing {
			p.mu.Unlock()
			p.endSession(s)
			return
		}
		if len(p.queue) == 0 || s.blocked {
			p.mu.Unlock()
			select {
			case <-p.wake:
			case <-s.flow:
			case <-s.dead:
				p.log.Warn("data connection lost, reconnecting", "error", s.reason)
				p.endSession(s)
				s = nil
			}
			continue
		}
		select {
		case <-s.dead:
			p.mu.Unlock()
			p.log.Warn("data connection lost, reconnecting", "error", s.reason)
			p.endSession(s)
			s = nil
			continue
		default:
		}
		c := p.queue[0]
		p.queue[0] = nil
		p.queue = p.queue[1:]
		s.published++
		c.tag = s.published
		p.inflight = append(p.inflight, c)
		metric, tag, again := c.name, c.tag, c.again
		p.mu.Unlock()
		// c may be confirmed and recycled as soon as Publish has sent it:
		// encode it and read what the stats need first. Nothing else
		// touches it before: only a confirmation of its tag releases it.
		points := len(c.times)
		buf = appendDataChunk(buf[:0], c.times, c.values)
		var headers amqp.Table
		if again {
			headers = republishedHeaders
		}

		dc, err := s.ch.PublishWithDeferredConfirm(p.exchange, metric, false, false, amqp.Publishing{
			Headers:      headers,
			DeliveryMode: amqp.Transient,
			Body:         buf,
		})
		if err == nil && (dc == nil || dc.DeliveryTag != tag) {
			err = fmt.Errorf("delivery tag %d, expected %d", deliveryTag(dc), tag)
		}
		if err != nil {
			p.stats.publishErrors.Add(1)
			p.setErr(fmt.Errorf("%w: %v", ErrPublish, err))
			p.log.Warn("publish failed, reconnecting", "metric", metric, "error", err)
			p.endSession(s)
			s = nil
			continue
		}
		p.stats.chunksPublished.Add(1)
		p.stats.pointsPublished.Add(uint64(points))
		p.stats.bytesPublished.Add(uint64(len(buf)))
	}
}

func deliveryTag(dc *amqp.DeferredConfirmation) uint64 {
	if dc == nil {
		return 0
	}
	return dc.DeliveryTag
}

// RepublishedHeader marks a chunk published again after a lost connection
// (AMQP header, value true). A sink may have received it already; every
// other chunk has no headers at all, as with the reference.
const RepublishedHeader = "x-libmetricq-republished"

var republishedHeaders = amqp.Table{RepublishedHeader: true}

// endSession closes a session and, once its confirmations have been
// handled, puts every unconfirmed chunk back at the head of the queue.
func (p *publisher) endSession(s *session) {
	p.stats.dataUp.Store(false)
	p.stats.blocked.Store(false)
	amqpkit.Close(s.conn)
	s.die(errors.New("closed"))
	// Shutting the connection down closes the confirmation channel;
	// confirmations read before that still count. The wait is bounded all
	// the same: after it, late confirmations are ignored (poisoned).
	select {
	case <-s.drained:
	case <-time.After(amqpkit.CloseTimeout):
		p.log.Error("data connection: confirmations did not drain; republishing what is unconfirmed")
	}
	p.mu.Lock()
	s.poisoned = true
	if p.current == s {
		p.current = nil
	}
	requeued := p.inflight
	for _, c := range requeued {
		c.again = true
	}
	if len(requeued) > 0 {
		p.queue = append(requeued, p.queue...)
		p.inflight = nil
	}
	p.mu.Unlock()
	if len(requeued) > 0 {
		p.stats.chunksRepublished.Add(uint64(len(requeued)))
		if p.onRepublish != nil {
			for _, c := range requeued {
				p.onRepublish(c.name, c.times, c.values)
			}
		}
		p.log.Info("unconfirmed chunks will be published again", "chunks", len(requeued))
	}
}

// confirm handles the session's confirmations, which amqp091 delivers in
// delivery-tag order. An ack for the oldest in-flight chunk confirms it.
// Anything else (a nack, or a tag that does not match, which would mean a
// confirmation went missing) poisons the session: it is closed and
// everything unconfirmed is published again, in order, so no chunk is ever
// taken as confirmed on a guess.
func (p *publisher) confirm(s *session, c amqp.Confirmation) {
	p.mu.Lock()
	if s.poisoned {
		p.mu.Unlock()
		return
	}
	if !c.Ack || len(p.inflight) == 0 || p.inflight[0].tag != c.DeliveryTag {
		s.poisoned = true
		expected := uint64(0)
		if len(p.inflight) > 0 {
			expected = p.inflight[0].tag
		}
		p.mu.Unlock()
		p.stats.publishErrors.Add(1)
		if !c.Ack {
			p.setErr(fmt.Errorf("%w: broker rejected (nack) a chunk", ErrPublish))
			p.log.Warn("broker nacked a chunk; reconnecting to publish everything unconfirmed again, in order")
		} else {
			p.setErr(fmt.Errorf("%w: confirmation out of sequence", ErrPublish))
			p.log.Error("confirmation out of sequence; reconnecting to publish everything unconfirmed again", "tag", c.DeliveryTag, "expected", expected)
		}
		s.die(errors.New("confirmations no longer trusted"))
		p.poke()
		return
	}
	done := p.inflight[0]
	p.inflight[0] = nil
	p.inflight = p.inflight[1:]
	p.unconfirmed -= len(done.times)
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

func (p *publisher) isClosing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closing
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

// close stops publishing and closes the connection, waiting at most about
// amqpkit.CloseTimeout (plus a dial's abort). What is still queued stays
// unpublished; Stop flushes before calling it.
func (p *publisher) close() {
	p.mu.Lock()
	p.closing = true
	s := p.current
	p.mu.Unlock()
	p.cancel()
	p.poke()
	select {
	case <-p.done:
		return
	case <-time.After(amqpkit.CloseTimeout):
	}
	// run is stuck in a write (the broker stopped reading): a close with a
	// deadline makes the write fail.
	if s != nil {
		amqpkit.Close(s.conn)
	}
	select {
	case <-p.done:
	case <-time.After(2 * amqpkit.CloseTimeout):
		p.log.Error("data connection: the publisher did not end")
	}
}

// abandon stops publishing for good and gives up every chunk the broker
// has not confirmed: it returns their points, and no confirmation arriving
// later counts. Chunks sealed afterwards are dropped as they come, counted
// in the stats.
func (p *publisher) abandon() int {
	p.mu.Lock()
	p.closing, p.abandoned = true, true
	if p.current != nil {
		p.current.poisoned = true
	}
	n := p.unconfirmed
	p.queue, p.inflight, p.unconfirmed = nil, nil, 0
	p.mu.Unlock()
	p.cancel()
	p.poke()
	return n
}

// unconfirmedPoints counts what the broker has not confirmed yet.
func (p *publisher) unconfirmedPoints() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.unconfirmed
}

// currentSession is for tests.
func (p *publisher) currentSession() *session {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.current
}
