package amqpkit

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Exchange and queue names fixed by the MetricQ protocol.
const (
	ManagementExchange = "metricq.management" // RPCs to the manager, keyed by function
	BroadcastExchange  = "metricq.broadcast"  // RPCs to every client (discover)
	DataExchange       = "metricq.data"       // data chunks, keyed by metric
	HistoryExchange    = "metricq.history"
	ManagementQueue    = "management" // the manager consumes it
)

// RPCQueue is the name of a client's exclusive queue, where its replies and
// the requests addressed to it arrive.
func RPCQueue(token string) string { return token + "-rpc" }

// CheckExchanges passively declares the exchanges the manager creates, so a
// missing manager gives a clear error instead of an unanswered RPC.
func CheckExchanges(conn *amqp.Connection, names ...string) error {
	for _, name := range names {
		// A failed passive declare closes its channel: one each.
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("%w: open channel: %v", ErrConnect, err)
		}
		err = ch.ExchangeDeclarePassive(name, amqp.ExchangeTopic, true, false, false, false, nil)
		if err != nil {
			var amqpErr *amqp.Error
			if errors.As(err, &amqpErr) && amqpErr.Code == amqp.NotFound {
				return fmt.Errorf("%w: exchange %q does not exist: has a MetricQ manager been started on this vhost?", ErrConnect, name)
			}
			return fmt.Errorf("%w: check exchange %q: %v", ErrConnect, name, err)
		}
		ch.Close()
	}
	return nil
}

// PrintableText makes untrusted text fit for a log line or an error: valid
// UTF-8, at most about max bytes.
func PrintableText(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
