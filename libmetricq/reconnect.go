package libmetricq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
)

// Reconnect backoff of both connections: doubling from the first to the
// last value.
const (
	backoffFirst = 100 * time.Millisecond
	backoffMax   = 5 * time.Second
)

// minAttempt is the shortest time one reconnect attempt gets, so that the
// last attempt can still report why it failed (a broker delays its answer
// to a refused login by seconds).
const minAttempt = 5 * time.Second

// restoreConnection is the one reconnect loop of both connections: it calls
// attempt, each call bounded, with doubling backoff until one succeeds.
// Every failure is retried alike, the broker's RESOURCE_LOCKED for an
// exclusive queue the dead connection still holds included: the broker
// frees it within about two heartbeat intervals. It returns nil once
// attempt succeeds, ctx's error when ctx ends (the source stops), or an
// error wrapping ErrConnect and the last failure once timeout has passed.
func restoreConnection(ctx context.Context, what string, timeout time.Duration, log *slog.Logger, attempt func(ctx context.Context) error) error {
	giveUp := time.Now().Add(timeout)
	backoff := backoffFirst
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout(giveUp))
		err := attempt(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(giveUp) {
			return fmt.Errorf("%w: %s not restored within %v: %v", ErrConnect, what, timeout, err)
		}
		log.Warn(what+" failed, retrying", "in", backoff, "error", err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		backoff = min(2*backoff, backoffMax)
	}
}

// attemptTimeout bounds one attempt: the time left until giving up, but at
// least minAttempt, and at most the dial timeout.
func attemptTimeout(giveUp time.Time) time.Duration {
	return min(amqpkit.DefaultDialTimeout, max(time.Until(giveUp), minAttempt))
}

// openLink opens the first management link. Other failures end the connect
// at once, but RESOURCE_LOCKED on the RPC queue is retried with the
// reconnect backoff, as re-registration does, until ctx ends or the
// reconnect timeout passes: a restarted process finds its queue still held
// by its previous, half-open connection until the broker notices that one
// is dead.
func (s *Source) openLink(ctx context.Context) (*mgmtLink, error) {
	giveUp := time.Now().Add(s.opts.reconnectTimeout)
	backoff := backoffFirst
	for {
		link := newMgmtLink(s.url, s.token, s.connSettings(), s.log, s.handlers)
		err := link.connect(ctx)
		if err == nil {
			return link, nil
		}
		link.close()
		if !errors.Is(err, amqpkit.ErrQueueLocked) || time.Now().Add(backoff).After(giveUp) {
			return nil, err
		}
		s.log.Warn("management connection failed, retrying", "in", backoff, "error", err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (until the connect's time ran out)", err)
		}
		backoff = min(2*backoff, backoffMax)
	}
}
