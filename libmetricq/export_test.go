package libmetricq

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Test hooks for the external tests (package libmetricq_test).

// WithRepublishHook sees each chunk the publisher puts back for publishing
// again after a lost data connection.
func WithRepublishHook(f func(metric string, times []int64, values []float64)) Option {
	return func(o *options) error { o.onRepublish = f; return nil }
}

// BreakDataChannel makes the broker close the source's data channel (only
// the channel, not the connection) with a 404 channel error.
func (s *Source) BreakDataChannel() error {
	pub := s.pub()
	if pub == nil {
		return errors.New("not connected")
	}
	sess := pub.currentSession()
	if sess == nil {
		return errors.New("data connection down")
	}
	return breakChannel(sess.ch)
}

// BreakManagementChannel does the same to the management channel, which
// consumes the RPC queue.
func (s *Source) BreakManagementChannel() error {
	l := s.link()
	if l == nil {
		return errors.New("not connected")
	}
	return breakChannel(l.endpoint.Channel())
}

func breakChannel(ch *amqp.Channel) error {
	err := ch.ExchangeDeclarePassive("libmetricq-test-no-such-exchange", "topic", true, false, false, false, nil)
	if err == nil {
		return errors.New("the broker did not close the channel")
	}
	return nil
}

// DispatchForTest runs an incoming message through a management link that
// is not connected, with the source's handlers, and returns the replies it
// would send, once every handler has finished.
func (s *Source) DispatchForTest(body []byte, correlationID, replyTo string, log *slog.Logger) [][]byte {
	l := newMgmtLink("amqp://127.0.0.1/", s.token, s.connSettings(), log, s.handlers)
	defer l.endpoint.End(ErrStopped)
	var (
		mu      sync.Mutex
		replies [][]byte
	)
	l.endpoint.Reply = func(_ context.Context, queue string, msg amqp.Publishing) error {
		mu.Lock()
		replies = append(replies, msg.Body)
		mu.Unlock()
		return nil
	}
	l.endpoint.Handle(amqp.Delivery{Body: body, CorrelationId: correlationID, ReplyTo: replyTo, AppId: "fuzz"})
	l.endpoint.Idle()
	mu.Lock()
	defer mu.Unlock()
	return replies
}
