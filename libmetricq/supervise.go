package libmetricq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
)

// linkSlot holds the current management link: empty before Connect and
// after a failed attempt, replaced on reconnect, closed for good at stop.
type linkSlot struct {
	mu     sync.Mutex
	link   *mgmtLink
	next   chan struct{} // closed when link is replaced
	closed bool          // no further link is installed
}

// current returns the link and a channel closed when it is replaced.
func (ls *linkSlot) current() (*mgmtLink, <-chan struct{}) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.next == nil {
		ls.next = make(chan struct{})
	}
	return ls.link, ls.next
}

// install makes l current and wakes those waiting for a new link; false
// once the slot is closed.
func (ls *linkSlot) install(l *mgmtLink) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.closed {
		return false
	}
	ls.link = l
	if ls.next != nil {
		close(ls.next)
	}
	ls.next = make(chan struct{})
	return true
}

// take empties the slot and returns what it held; forGood keeps later
// links out.
func (ls *linkSlot) take(forGood bool) *mgmtLink {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	l := ls.link
	ls.link = nil
	ls.closed = ls.closed || forGood
	return l
}

func (s *Source) link() *mgmtLink {
	l, _ := s.mgmt.current()
	return l
}

// setLink installs a new management link and wakes calls waiting for one.
// Once the source has shut its links down it refuses (and closes) l.
func (s *Source) setLink(l *mgmtLink) bool {
	if !s.mgmt.install(l) {
		l.close()
		return false
	}
	s.stats.mgmtUp.Store(true)
	return true
}

// dropLink closes the link a failed connect attempt installed; a later
// attempt may install another.
func (s *Source) dropLink() { s.closeLink(false) }

// closeLinks shuts the current management link down and keeps later ones
// from being installed.
func (s *Source) closeLinks() { s.closeLink(true) }

func (s *Source) closeLink(forGood bool) {
	if l := s.mgmt.take(forGood); l != nil {
		l.close()
	}
	s.stats.mgmtUp.Store(false)
}

// rpc calls the manager. When the management connection is lost, the call
// waits (within ctx) for the reconnect and is sent again: register and
// declare_metrics are idempotent at the manager.
func (s *Source) rpc(ctx context.Context, function string, args map[string]any) (map[string]json.RawMessage, error) {
	for {
		l, replaced := s.mgmt.current()
		if l == nil {
			return nil, fmt.Errorf("%w: not connected", ErrStopped)
		}
		reply, err := l.call(ctx, function, args)
		// A lost link, or one closed under us other than by Stop: wait for
		// the next one and send again.
		lost := err != nil && (errors.Is(err, ErrConnect) || (errors.Is(err, ErrStopped) && !s.stopping.Load()))
		if !lost {
			return reply, err
		}
		select {
		case <-replaced:
		case <-ctx.Done():
			return nil, fmt.Errorf("rpc %s: waiting for the management connection (%v): %w", function, err, ctx.Err())
		case <-s.stopCtx.Done():
			return nil, s.stoppedErr()
		}
	}
}

// superviseMgmt waits for the link to die and restores it: connect with
// backoff, register again and declare every declared metric again, as
// metricq-go does (the reference's robust channels re-declare queues but
// not metrics). Meanwhile RPCs wait, and data keeps flowing on its own
// connection. After the reconnect timeout the source stops with
// ErrConnect.
func (s *Source) superviseMgmt(l *mgmtLink) {
	for {
		select {
		case <-l.done:
		case <-s.stopCtx.Done():
			return
		}
		if s.stopping.Load() {
			return
		}
		s.stats.mgmtUp.Store(false)
		s.log.Warn("management connection lost, reconnecting", "error", l.err())
		// Closing the old connection for sure lets the broker free the
		// exclusive RPC queue for the new one.
		l.close()
		var next *mgmtLink
		err := restoreConnection(s.stopCtx, "management connection", s.opts.reconnectTimeout, s.log, func(ctx context.Context) error {
			var err error
			next, err = s.restoreMgmt(ctx)
			return err
		})
		if err != nil {
			if !s.stopping.Load() {
				s.fail(err)
			}
			return
		}
		if !s.setLink(next) {
			return
		}
		s.stats.mgmtReconnects.Add(1)
		s.log.Info("management connection restored, registered and declared again")
		l = next
	}
}

// restoreMgmt makes a new link: connect, register, declare. A manager that
// is down makes register wait (its durable queue keeps the request) until
// ctx ends.
func (s *Source) restoreMgmt(ctx context.Context) (*mgmtLink, error) {
	l := newMgmtLink(s.url, s.token, s.connSettings(), s.log, s.handlers)
	if err := l.connect(ctx); err != nil {
		l.close()
		return nil, err
	}
	fail := func(err error) (*mgmtLink, error) {
		l.close()
		return nil, err
	}
	reply, err := l.call(ctx, "source.register", nil)
	if err != nil {
		return fail(err)
	}
	var address string
	if decodeField(reply, "dataServerAddress", &address, false) == nil && address != "" && address != s.dataAddress {
		// As the reference does: the data connection stays where it is.
		s.log.Error("the manager now names another data server; keeping the current one", "dataServerAddress", RedactURL(address))
	}
	s.declMu.Lock()
	s.declEpoch++
	declared := make(declarations, 0, s.metrics.len())
	s.metrics.each(func(m *metric) {
		m.mu.Lock()
		if m.declared {
			declared = append(declared, declaration{m: m, metadata: m.declaration})
		}
		m.mu.Unlock()
	})
	s.declMu.Unlock()
	if len(declared) > 0 {
		if _, err := l.call(ctx, "source.declare_metrics", map[string]any{"metrics": declared}); err != nil {
			return fail(err)
		}
	}
	return l, nil
}
