package libmetricq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Exchange names fixed by the MetricQ protocol.
const (
	managementExchange = "metricq.management"
	broadcastExchange  = "metricq.broadcast"
)

// rpcHandler serves one incoming RPC. args is the request body without
// "function". A nil result is answered as {}.
type rpcHandler func(ctx context.Context, args map[string]json.RawMessage) (any, error)

type rpcResult struct {
	body []byte
	err  error
}

// mgmtLink owns the management connection: the RPC queue "<token>-rpc",
// outgoing calls matched to replies by correlation id, and incoming requests
// dispatched to handlers. Everything about that connection's lifecycle lives
// here, so that reconnecting is a change to this type alone.
type mgmtLink struct {
	token    string
	url      string
	log      *slog.Logger
	handlers map[string]rpcHandler

	queue      string
	corrPrefix string
	corrSeq    atomic.Uint64

	mu      sync.Mutex
	conn    *amqp.Connection
	ch      *amqp.Channel
	pending map[string]chan rpcResult
	lostErr error // why the link ended; nil while it is up

	ctx    context.Context // handlers run under it; cancelled on close
	cancel context.CancelFunc
	done   chan struct{} // closed when the connection is gone
	wg     sync.WaitGroup
}

func newMgmtLink(url, token string, log *slog.Logger, handlers map[string]rpcHandler) *mgmtLink {
	var random [6]byte
	_, _ = rand.Read(random[:])
	ctx, cancel := context.WithCancel(context.Background())
	return &mgmtLink{
		token:      token,
		url:        url,
		log:        log,
		handlers:   handlers,
		queue:      token + "-rpc",
		corrPrefix: "libmetricq-rpc-" + token + "-" + hex.EncodeToString(random[:]) + "-",
		pending:    make(map[string]chan rpcResult),
		ctx:        ctx,
		cancel:     cancel,
		done:       make(chan struct{}),
	}
}

// connect opens the connection and sets up the RPC queue as the reference
// does: exclusive "<token>-rpc", bound to metricq.broadcast, consumed.
func (l *mgmtLink) connect(ctx context.Context) error {
	conn, err := dial(ctx, l.url, "management connection "+l.token)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		conn.Close()
		return err
	}
	// A failed passive declare closes its channel, so the checks get their own.
	if err := checkExchanges(conn, managementExchange, broadcastExchange); err != nil {
		return fail(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		return fail(fmt.Errorf("%w: management channel: %v", ErrConnect, err))
	}
	if _, err := ch.QueueDeclare(l.queue, false, false, true, false, nil); err != nil {
		var amqpErr *amqp.Error
		if errors.As(err, &amqpErr) && amqpErr.Code == amqp.ResourceLocked {
			return fail(fmt.Errorf("%w: queue %q is held by another connection: is a client with token %q running already?", ErrConnect, l.queue, l.token))
		}
		return fail(fmt.Errorf("%w: declare queue %q: %v", ErrConnect, l.queue, err))
	}
	if err := ch.QueueBind(l.queue, "#", broadcastExchange, false, nil); err != nil {
		return fail(fmt.Errorf("%w: bind %q to %s: %v", ErrConnect, l.queue, broadcastExchange, err))
	}
	if err := ch.Qos(64, 0, false); err != nil {
		return fail(fmt.Errorf("%w: qos: %v", ErrConnect, err))
	}
	deliveries, err := ch.Consume(l.queue, "", false, true, false, false, nil)
	if err != nil {
		return fail(fmt.Errorf("%w: consume %q: %v", ErrConnect, l.queue, err))
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 8))
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))

	l.mu.Lock()
	l.conn, l.ch = conn, ch
	l.mu.Unlock()

	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		for d := range deliveries {
			_ = d.Ack(false) // acked before handling: a bad message must never come back
			l.dispatch(d)
		}
	}()
	go func() {
		defer l.wg.Done()
		for r := range returns {
			l.resolve(r.CorrelationId, rpcResult{err: fmt.Errorf("%w: request %s was returned unroutable (%s): no MetricQ manager is consuming %s", ErrRPC, r.RoutingKey, r.ReplyText, r.Exchange)})
		}
	}()
	go func() {
		amqpErr, ok := <-closed
		reason := errors.New("closed")
		if ok && amqpErr != nil {
			reason = amqpErr
		}
		l.lost(fmt.Errorf("%w: management connection lost: %v", ErrConnect, reason))
	}()
	return nil
}

// checkExchanges passively declares the exchanges the manager creates, so a
// missing manager gives a clear error instead of an unanswered RPC.
func checkExchanges(conn *amqp.Connection, names ...string) error {
	for _, name := range names {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("%w: open channel: %v", ErrConnect, err)
		}
		err = ch.ExchangeDeclarePassive(name, "topic", true, false, false, false, nil)
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

// lost marks the link dead and fails every pending call.
func (l *mgmtLink) lost(err error) {
	l.mu.Lock()
	if l.lostErr != nil {
		l.mu.Unlock()
		return
	}
	l.lostErr = err
	pending := l.pending
	l.pending = make(map[string]chan rpcResult)
	l.mu.Unlock()
	for _, c := range pending {
		c <- rpcResult{err: err}
	}
	l.cancel()
	close(l.done)
}

// err says why the link ended, nil while it is up.
func (l *mgmtLink) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lostErr
}

// close shuts the connection down and waits for the consumer goroutines.
func (l *mgmtLink) close() {
	l.mu.Lock()
	conn := l.conn
	l.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
	l.lost(fmt.Errorf("%w: management connection closed", ErrStopped))
	l.wg.Wait()
}

func (l *mgmtLink) resolve(correlationID string, r rpcResult) bool {
	l.mu.Lock()
	c, ok := l.pending[correlationID]
	delete(l.pending, correlationID)
	l.mu.Unlock()
	if ok {
		c <- r
	}
	return ok
}

// call sends a request to the manager and waits for its reply, ctx bounding
// the wait. An {"error": …} reply becomes an *RPCError.
func (l *mgmtLink) call(ctx context.Context, function string, args map[string]any) (map[string]json.RawMessage, error) {
	request := make(map[string]any, len(args)+1)
	for k, v := range args {
		request[k] = v
	}
	request["function"] = function
	body, err := json.Marshal(request)
	if err != nil {
		return nil, fmt.Errorf("%w: rpc %s: encode arguments: %v", ErrInvalid, function, err)
	}
	correlationID := l.corrPrefix + fmt.Sprint(l.corrSeq.Add(1))
	result := make(chan rpcResult, 1)

	l.mu.Lock()
	ch, lostErr := l.ch, l.lostErr
	if lostErr == nil {
		l.pending[correlationID] = result
	}
	l.mu.Unlock()
	if lostErr != nil {
		return nil, lostErr
	}
	if ch == nil {
		return nil, fmt.Errorf("%w: not connected", ErrConnect)
	}
	err = ch.PublishWithContext(ctx, managementExchange, function, true, false, amqp.Publishing{
		ContentType:   "application/json",
		CorrelationId: correlationID,
		ReplyTo:       l.queue,
		AppId:         l.token,
		DeliveryMode:  amqp.Transient,
		Body:          body,
	})
	if err != nil {
		l.resolve(correlationID, rpcResult{})
		return nil, fmt.Errorf("%w: rpc %s: publish: %v", ErrConnect, function, err)
	}
	select {
	case r := <-result:
		if r.err != nil {
			return nil, r.err
		}
		return parseReply(function, r.body)
	case <-ctx.Done():
		l.resolve(correlationID, rpcResult{})
		return nil, fmt.Errorf("rpc %s: no reply from the manager: %w", function, ctx.Err())
	}
}

func parseReply(function string, body []byte) (map[string]json.RawMessage, error) {
	var reply map[string]json.RawMessage
	if err := json.Unmarshal(body, &reply); err != nil || reply == nil {
		return nil, &RPCError{Function: function, Message: fmt.Sprintf("unreadable reply (%d bytes, not a JSON object)", len(body))}
	}
	if raw, ok := reply["error"]; ok {
		var text string
		if json.Unmarshal(raw, &text) != nil {
			text = string(raw)
		}
		return nil, &RPCError{Function: function, Message: text}
	}
	return reply, nil
}

// dispatch tells replies from requests the way metricq-cpp and metricq-go
// do: a known correlation id is a reply; anything else with a "function" is a
// request. Unreadable messages are dropped with a log line, never requeued.
func (l *mgmtLink) dispatch(d amqp.Delivery) {
	if d.CorrelationId != "" && l.resolve(d.CorrelationId, rpcResult{body: d.Body}) {
		return
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(d.Body, &body); err != nil || body == nil {
		l.log.Warn("dropping unreadable message on the RPC queue", "bytes", len(d.Body), "from", d.AppId)
		return
	}
	var function string
	if raw, ok := body["function"]; !ok || json.Unmarshal(raw, &function) != nil {
		l.log.Debug("dropping reply with unknown correlation id", "correlation_id", d.CorrelationId, "from", d.AppId)
		return
	}
	if d.ReplyTo == "" {
		l.log.Warn("ignoring RPC request without reply_to", "function", function, "from", d.AppId)
		return
	}
	handler, ok := l.handlers[function]
	if !ok {
		l.log.Warn("unknown RPC", "function", function, "from", d.AppId)
		l.reply(d, map[string]string{"error": fmt.Sprintf("'Missing rpc handler for %s'", function)})
		return
	}
	delete(body, "function")
	// Handlers may make RPCs themselves (a config handler declaring metrics),
	// whose replies arrive through this very loop: never block it.
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		result, err := handler(l.ctx, body)
		if err != nil {
			l.log.Error("RPC handler failed", "function", function, "error", err)
			l.reply(d, map[string]string{"error": err.Error()})
			return
		}
		if result == nil {
			result = struct{}{}
		}
		l.reply(d, result)
	}()
}

func (l *mgmtLink) reply(request amqp.Delivery, result any) {
	body, err := json.Marshal(result)
	if err != nil {
		body, _ = json.Marshal(map[string]string{"error": "reply not encodable: " + err.Error()})
	}
	l.mu.Lock()
	ch := l.ch
	l.mu.Unlock()
	if ch == nil {
		return
	}
	err = ch.PublishWithContext(l.ctx, "", request.ReplyTo, false, false, amqp.Publishing{
		ContentType:   "application/json",
		CorrelationId: request.CorrelationId,
		AppId:         l.token,
		DeliveryMode:  amqp.Transient,
		Body:          body,
	})
	if err != nil {
		l.log.Warn("could not send RPC reply", "to", request.ReplyTo, "error", err)
	}
}
