package libmetricq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

func (s *Source) link() *mgmtLink {
	s.mgmtMu.Lock()
	defer s.mgmtMu.Unlock()
	return s.mgmt
}

// setLink installs a new management link and wakes calls waiting for one.
func (s *Source) setLink(l *mgmtLink) {
	s.mgmtMu.Lock()
	s.mgmt = l
	close(s.mgmtNext)
	s.mgmtNext = make(chan struct{})
	s.mgmtMu.Unlock()
}

// rpc calls the manager. When the management connection is lost, the call
// waits (within ctx) for the reconnect and is sent again: register and
// declare_metrics are idempotent at the manager.
func (s *Source) rpc(ctx context.Context, function string, args map[string]any) (map[string]json.RawMessage, error) {
	for {
		s.mgmtMu.Lock()
		l, replaced := s.mgmt, s.mgmtNext
		s.mgmtMu.Unlock()
		if l == nil {
			return nil, fmt.Errorf("%w: not connected", ErrStopped)
		}
		reply, err := l.call(ctx, function, args)
		if err == nil || !errors.Is(err, ErrConnect) {
			return reply, err
		}
		select {
		case <-replaced:
		case <-ctx.Done():
			return nil, fmt.Errorf("rpc %s: waiting for the management connection (%v): %w", function, err, ctx.Err())
		case <-s.stopCh:
			return nil, s.stoppedErr()
		}
	}
}

// superviseMgmt waits for the link to die and restores it: connect with
// backoff, register again and declare every declared metric again, as
// metricq-go does (the reference's robust channels re-declare queues but
// not metrics). After the reconnect timeout the source stops with
// ErrConnect.
func (s *Source) superviseMgmt(l *mgmtLink) {
	select {
	case <-l.done:
	case <-s.stopCh:
		return
	}
	lostErr := l.err()
	s.log.Warn("management connection lost, reconnecting", "error", lostErr)
	giveUp := time.Now().Add(s.opts.reconnectTimeout)
	backoff := 100 * time.Millisecond
	for {
		wait := min(30*time.Second, time.Until(giveUp))
		ctx, cancel := context.WithTimeout(context.Background(), max(wait, time.Millisecond))
		next, err := s.restoreMgmt(ctx)
		cancel()
		if err == nil {
			s.setLink(next)
			s.stats.reconnects.Add(1)
			s.log.Info("management connection restored")
			go s.superviseMgmt(next)
			return
		}
		if time.Now().After(giveUp) {
			s.fail(fmt.Errorf("%w: management connection not restored within %v: %v", ErrConnect, s.opts.reconnectTimeout, err))
			return
		}
		s.log.Warn("management reconnect failed, retrying", "in", backoff, "error", err)
		select {
		case <-time.After(backoff):
		case <-s.stopCh:
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *Source) restoreMgmt(ctx context.Context) (*mgmtLink, error) {
	l := newMgmtLink(s.url, s.token, s.log, s.handlers)
	if err := l.connect(ctx); err != nil {
		return nil, err
	}
	fail := func(err error) (*mgmtLink, error) {
		l.close()
		return nil, err
	}
	if _, err := l.call(ctx, "source.register", nil); err != nil {
		return fail(err)
	}
	declared := map[string]Metadata{}
	for _, m := range s.allMetrics() {
		m.mu.Lock()
		if m.declared {
			declared[m.name] = m.metadata
		}
		m.mu.Unlock()
	}
	if len(declared) > 0 {
		if _, err := l.call(ctx, "source.declare_metrics", map[string]any{"metrics": declared}); err != nil {
			return fail(err)
		}
	}
	return l, nil
}
