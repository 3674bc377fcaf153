package libmetricq

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
)

// mgmtLink owns one management connection and the source's RPC endpoint on
// it (amqpkit.Endpoint: the queue "<token>-rpc", calls to the manager,
// requests served by the source's handlers), and tells when it is lost. A
// link is used once: after a loss the supervisor makes a new one.
type mgmtLink struct {
	token    string
	url      string
	settings connSettings
	endpoint *amqpkit.Endpoint

	mu   sync.Mutex
	conn *amqp.Connection

	done chan struct{} // closed when the link has ended
}

func newMgmtLink(url, token string, settings connSettings, log *slog.Logger, handlers map[string]amqpkit.Handler) *mgmtLink {
	return &mgmtLink{
		token:    token,
		url:      url,
		settings: settings,
		endpoint: amqpkit.NewEndpoint(token, handlers, log),
		done:     make(chan struct{}),
	}
}

// connect opens the connection and the endpoint on it, and watches both.
func (l *mgmtLink) connect(ctx context.Context) error {
	conn, err := dial(ctx, l.url, "management connection "+l.token, l.settings)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.conn = conn
	l.mu.Unlock()
	if err := l.endpoint.Open(conn); err != nil {
		amqpkit.Close(conn)
		return err
	}
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
	chClosed := l.endpoint.Channel().NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		var e *amqp.Error
		what := "connection"
		select {
		case e = <-connClosed:
		case e = <-chClosed:
			what = "channel"
		case <-l.endpoint.ConsumerEnded():
			// The consumer ended: the channel or connection closed (its
			// notice may be on its way), or the broker cancelled the
			// consumer (the queue was deleted). Either way no request or
			// reply can arrive any more.
			what = "RPC consumer"
			select {
			case e = <-connClosed:
				what = "connection"
			case e = <-chClosed:
				what = "channel"
			case <-time.After(200 * time.Millisecond):
			}
		case <-l.done:
			return
		}
		reason := "ended"
		if e != nil {
			reason = "closed by the broker: " + e.Error()
		}
		l.lost(fmt.Errorf("%w: management %s %s", ErrConnect, what, reason))
	}()
	return nil
}

// lost marks the link dead, fails every pending call, and closes the
// connection if it is still open (so the broker frees the exclusive queue
// for the next link).
func (l *mgmtLink) lost(err error) {
	if !l.endpoint.End(err) {
		return
	}
	close(l.done)
	l.mu.Lock()
	conn := l.conn
	l.mu.Unlock()
	if conn != nil && !conn.IsClosed() {
		go amqpkit.Close(conn)
	}
}

// err says why the link ended, nil while it is up.
func (l *mgmtLink) err() error { return l.endpoint.Err() }

// close shuts the connection down (bounded by amqpkit.CloseTimeout) and
// waits for the consumer loops, which end with it. Handlers still running
// get a cancelled context and are not waited for.
func (l *mgmtLink) close() {
	l.lost(fmt.Errorf("%w: management connection closed", ErrStopped))
	l.mu.Lock()
	conn := l.conn
	l.mu.Unlock()
	amqpkit.Close(conn)
	l.endpoint.Wait()
}

// call sends a request to the manager and waits for its reply, ctx bounding
// the wait. An {"error": …} reply becomes an *RPCError. A lost connection
// fails the call with an error wrapping ErrConnect.
func (l *mgmtLink) call(ctx context.Context, function string, args map[string]any) (map[string]json.RawMessage, error) {
	return l.endpoint.Call(ctx, function, args)
}
