package libmetricq

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
)

// Exchange names fixed by the MetricQ protocol.
const (
	managementExchange = "metricq.management"
	broadcastExchange  = "metricq.broadcast"
)

// Limits on what the management connection takes from the broker. Every
// incoming message is untrusted: it is acknowledged before it is looked at
// (so nothing is ever requeued), and bodies beyond maxRPCBody are dropped
// unread. At most maxRPCHandlers requests are handled at once; beyond that
// a request is answered at once with an error.
const (
	maxRPCBody     = 16 << 20
	maxRPCHandlers = 32
)

// rpcHandler serves one incoming RPC. args is the request body without
// "function". A nil result is answered as {}.
type rpcHandler func(ctx context.Context, args map[string]json.RawMessage) (any, error)

type rpcResult struct {
	body []byte
	err  error
}

// mgmtLink owns one management connection: the RPC queue "<token>-rpc",
// outgoing calls matched to replies by correlation id, and incoming requests
// dispatched to handlers. A link is used once: after a loss the supervisor
// makes a new one.
type mgmtLink struct {
	token    string
	url      string
	settings connSettings
	log      *slog.Logger
	handlers map[string]rpcHandler

	queue      string
	corrPrefix string
	corrSeq    atomic.Uint64

	// send publishes a reply; replaced in tests.
	send func(ctx context.Context, exchange, key string, msg amqp.Publishing) error

	mu      sync.Mutex
	conn    *amqp.Connection
	ch      *amqp.Channel
	pending map[string]chan rpcResult
	lostErr error // why the link ended; nil while it is up

	ctx    context.Context // handlers run under it; cancelled when the link ends
	cancel context.CancelFunc
	done   chan struct{} // closed when the link has ended
	loops  sync.WaitGroup
	busy   chan struct{} // one token per running handler
}

func newMgmtLink(url, token string, settings connSettings, log *slog.Logger, handlers map[string]rpcHandler) *mgmtLink {
	var random [6]byte
	_, _ = rand.Read(random[:])
	ctx, cancel := context.WithCancel(context.Background())
	l := &mgmtLink{
		token:      token,
		url:        url,
		settings:   settings,
		log:        log,
		handlers:   handlers,
		queue:      token + "-rpc",
		corrPrefix: "libmetricq-rpc-" + token + "-" + hex.EncodeToString(random[:]) + "-",
		pending:    make(map[string]chan rpcResult),
		ctx:        ctx,
		cancel:     cancel,
		done:       make(chan struct{}),
		busy:       make(chan struct{}, maxRPCHandlers),
	}
	l.send = l.publish
	return l
}

// connect opens the connection and sets up the RPC queue as the reference
// does: exclusive "<token>-rpc", bound to metricq.broadcast, consumed.
func (l *mgmtLink) connect(ctx context.Context) error {
	conn, err := dial(ctx, l.url, "management connection "+l.token, l.settings)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		amqpkit.Close(conn)
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
			return fail(fmt.Errorf("%w: queue %q is held by another connection: is a client with token %q running already? "+
				"(after a network failure the broker frees it once it notices the old connection is dead)", ErrConnect, l.queue, l.token))
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
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
	chClosed := ch.NotifyClose(make(chan *amqp.Error, 1))

	l.mu.Lock()
	l.conn, l.ch = conn, ch
	l.mu.Unlock()

	consumerEnded := make(chan struct{})
	l.loops.Add(2)
	go func() {
		defer l.loops.Done()
		defer close(consumerEnded)
		for d := range deliveries {
			_ = d.Ack(false) // acked before handling: a bad message must never come back
			l.dispatch(d)
		}
	}()
	go func() {
		defer l.loops.Done()
		for r := range returns {
			l.resolve(r.CorrelationId, rpcResult{err: fmt.Errorf("%w: request %s was returned unroutable (%s): no MetricQ manager is consuming %s", ErrRPC, r.RoutingKey, r.ReplyText, r.Exchange)})
		}
	}()
	go func() {
		var e *amqp.Error
		what := "connection"
		select {
		case e = <-connClosed:
		case e = <-chClosed:
			what = "channel"
		case <-consumerEnded:
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

// lost marks the link dead, fails every pending call, and closes the
// connection if it is still open (so the broker frees the exclusive queue
// for the next link).
func (l *mgmtLink) lost(err error) {
	l.mu.Lock()
	if l.lostErr != nil {
		l.mu.Unlock()
		return
	}
	l.lostErr = err
	pending := l.pending
	l.pending = make(map[string]chan rpcResult)
	conn := l.conn
	l.mu.Unlock()
	for _, c := range pending {
		c <- rpcResult{err: err}
	}
	l.cancel()
	close(l.done)
	if conn != nil && !conn.IsClosed() {
		go amqpkit.Close(conn)
	}
}

// err says why the link ended, nil while it is up.
func (l *mgmtLink) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lostErr
}

// close shuts the connection down (bounded by amqpkit.CloseTimeout) and waits for
// the consumer loops, which end with it. Handlers still running get a
// cancelled context and are not waited for.
func (l *mgmtLink) close() {
	l.lost(fmt.Errorf("%w: management connection closed", ErrStopped))
	l.mu.Lock()
	conn := l.conn
	l.mu.Unlock()
	amqpkit.Close(conn)
	l.loops.Wait()
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
// the wait. An {"error": …} reply becomes an *RPCError. A lost connection
// fails the call with an error wrapping ErrConnect.
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
	correlationID := l.corrPrefix + strconv.FormatUint(l.corrSeq.Add(1), 10)
	result := make(chan rpcResult, 1)

	l.mu.Lock()
	ch, lostErr := l.ch, l.lostErr
	if lostErr == nil && ch != nil {
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
		if ctx.Err() != nil {
			return nil, fmt.Errorf("rpc %s: %w", function, ctx.Err())
		}
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
		return nil, &RPCError{Function: function, Message: printableText(text, 1000)}
	}
	return reply, nil
}

// incoming is what dispatch makes of a message on the RPC queue.
type incoming struct {
	kind     incomingKind
	function string                     // for requests
	args     map[string]json.RawMessage // for requests, without "function"
	why      string                     // for drops and bad requests
}

type incomingKind int

const (
	incomingDrop         incomingKind = iota // log and forget
	incomingUnknownReply                     // a late reply: forget quietly
	incomingRequest                          // call the handler
	incomingBadRequest                       // answer with an error
)

// classify tells replies from requests the way metricq-cpp and metricq-go
// do (a known correlation id was resolved before): anything with a string
// "function" is a request; anything else is an unknown reply, or garbage.
// It never fails: whatever the body, the message is dropped or answered.
func classify(body []byte, replyTo string) incoming {
	if len(body) > maxRPCBody {
		return incoming{kind: incomingDrop, why: fmt.Sprintf("body of %d bytes exceeds the limit of %d", len(body), maxRPCBody)}
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return incoming{kind: incomingDrop, why: "not a JSON object"}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &fields); err != nil || fields == nil {
		return incoming{kind: incomingDrop, why: "not a JSON object"}
	}
	raw, ok := fields["function"]
	if !ok {
		return incoming{kind: incomingUnknownReply, why: "reply with an unknown correlation id"}
	}
	delete(fields, "function")
	var function string
	if err := json.Unmarshal(raw, &function); err != nil {
		return incoming{kind: incomingBadRequest, why: "\"function\" is not a string", args: fields}
	}
	if replyTo == "" {
		return incoming{kind: incomingDrop, function: function, why: "request without reply_to"}
	}
	return incoming{kind: incomingRequest, function: function, args: fields}
}

// dispatch handles one message from the RPC queue. Unreadable messages are
// dropped with a log line, never requeued; requests get an answer, errors
// included; handler panics are caught.
func (l *mgmtLink) dispatch(d amqp.Delivery) {
	if d.CorrelationId != "" && l.resolve(d.CorrelationId, rpcResult{body: d.Body}) {
		return
	}
	in := classify(d.Body, d.ReplyTo)
	from := printableText(d.AppId, 100)
	switch in.kind {
	case incomingUnknownReply:
		l.log.Debug("dropping reply with unknown correlation id", "correlation_id", printableText(d.CorrelationId, 200), "from", from)
		return
	case incomingDrop:
		l.log.Warn("dropping message on the RPC queue", "why", in.why, "function", printableText(in.function, 100), "bytes", len(d.Body), "from", from)
		return
	case incomingBadRequest:
		l.log.Warn("bad RPC request", "why", in.why, "from", from)
		if d.ReplyTo != "" {
			l.reply(d, map[string]string{"error": in.why})
		}
		return
	}
	handler, ok := l.handlers[in.function]
	if !ok {
		l.log.Warn("unknown RPC", "function", printableText(in.function, 100), "from", from)
		l.reply(d, map[string]string{"error": fmt.Sprintf("'Missing rpc handler for %s'", printableText(in.function, 255))})
		return
	}
	// Handlers may make RPCs themselves (a config handler declaring metrics),
	// whose replies arrive through this very loop: never block it.
	select {
	case l.busy <- struct{}{}:
	default:
		l.log.Warn("too many RPCs in progress, refusing one", "function", in.function, "from", from)
		l.reply(d, map[string]string{"error": fmt.Sprintf("busy: %d RPCs in progress", maxRPCHandlers)})
		return
	}
	go func() {
		defer func() { <-l.busy }()
		result, err := callHandler(l.ctx, handler, in.args, l.log)
		if err != nil {
			l.log.Error("RPC handler failed", "function", in.function, "error", err)
			l.reply(d, map[string]string{"error": err.Error()})
			return
		}
		if result == nil {
			result = struct{}{}
		}
		l.reply(d, result)
	}()
}

// callHandler runs a handler, turning a panic into an error: a bad request
// must not take the host process down.
func callHandler(ctx context.Context, h rpcHandler, args map[string]json.RawMessage, log *slog.Logger) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("RPC handler panicked", "panic", r, "stack", string(debug.Stack()))
			result, err = nil, fmt.Errorf("RPC handler panicked: %v", r)
		}
	}()
	return h(ctx, args)
}

func (l *mgmtLink) reply(request amqp.Delivery, result any) {
	body, err := json.Marshal(result)
	if err != nil {
		body, _ = json.Marshal(map[string]string{"error": "reply not encodable: " + err.Error()})
	}
	err = l.send(l.ctx, "", request.ReplyTo, amqp.Publishing{
		ContentType:   "application/json",
		CorrelationId: request.CorrelationId,
		AppId:         l.token,
		DeliveryMode:  amqp.Transient,
		Body:          body,
	})
	if err != nil {
		l.log.Warn("could not send RPC reply", "to", printableText(request.ReplyTo, 255), "error", err)
	}
}

func (l *mgmtLink) publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error {
	l.mu.Lock()
	ch := l.ch
	l.mu.Unlock()
	if ch == nil {
		return errors.New("not connected")
	}
	if !utf8.ValidString(key) || len(key) > MaxNameLength {
		return errors.New("reply_to is not a valid queue name")
	}
	return ch.PublishWithContext(ctx, exchange, key, false, false, msg)
}
