package amqpkit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Limits on what a client's RPC queue takes from the broker. Every incoming
// message is untrusted: it is acknowledged before it is looked at (so
// nothing is ever requeued), and bodies beyond maxRPCBody are dropped
// unread. At most maxRPCHandlers requests are handled at once; beyond that
// a request is answered at once with an error.
const (
	maxRPCBody     = 16 << 20
	maxRPCHandlers = 32
	rpcPrefetch    = 64
)

// maxQueueName is the AMQP short-string limit of a queue name, in bytes.
const maxQueueName = 255

// Handler serves one incoming RPC. args is the request body without
// "function". A nil result is answered as {}.
type Handler func(ctx context.Context, args map[string]json.RawMessage) (any, error)

// Endpoint is a MetricQ client's end of the management protocol on one
// connection: its exclusive queue "<token>-rpc", bound to
// metricq.broadcast, where the replies to its calls (Calls) and the
// requests for it (served by handlers) arrive. An Endpoint is used once.
type Endpoint struct {
	token    string
	queue    string
	log      *slog.Logger
	handlers map[string]Handler

	// Reply publishes the answer to a request; nil means on the
	// endpoint's channel (tests replace it).
	Reply func(ctx context.Context, queue string, msg amqp.Publishing) error

	mu    sync.Mutex
	ch    *amqp.Channel
	calls *Calls
	ended error

	ctx           context.Context // handlers run under it; cancelled by End
	cancel        context.CancelFunc
	busy          chan struct{} // one token per running handler
	handling      sync.WaitGroup
	loops         sync.WaitGroup
	consumerEnded chan struct{}
}

// NewEndpoint prepares the endpoint of the client token, serving handlers.
func NewEndpoint(token string, handlers map[string]Handler, log *slog.Logger) *Endpoint {
	ctx, cancel := context.WithCancel(context.Background())
	return &Endpoint{
		token:         token,
		queue:         RPCQueue(token),
		log:           log,
		handlers:      handlers,
		ctx:           ctx,
		cancel:        cancel,
		busy:          make(chan struct{}, maxRPCHandlers),
		consumerEnded: make(chan struct{}),
	}
}

// ErrQueueLocked is Open's refusal when another connection holds the
// exclusive RPC queue (the broker's RESOURCE_LOCKED): a client with the
// same token runs, or a dead connection the broker has not noticed yet.
var ErrQueueLocked = errors.New("RPC queue locked")

// Open sets the endpoint up on conn as the reference does: it checks that a
// manager made its exchanges, declares the exclusive queue, binds it to
// metricq.broadcast and consumes it. Errors wrap ErrConnect.
func (e *Endpoint) Open(conn *amqp.Connection) error {
	if err := CheckExchanges(conn, ManagementExchange, BroadcastExchange); err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("%w: management channel: %v", ErrConnect, err)
	}
	if _, err := ch.QueueDeclare(e.queue, false, false, true, false, nil); err != nil {
		var amqpErr *amqp.Error
		if errors.As(err, &amqpErr) && amqpErr.Code == amqp.ResourceLocked {
			return fmt.Errorf("%w: %w: queue %q is held by another connection: is a client with token %q running already? "+
				"(after a network failure the broker frees it once it notices the old connection is dead)", ErrConnect, ErrQueueLocked, e.queue, e.token)
		}
		return fmt.Errorf("%w: declare queue %q: %v", ErrConnect, e.queue, err)
	}
	if err := ch.QueueBind(e.queue, "#", BroadcastExchange, false, nil); err != nil {
		return fmt.Errorf("%w: bind %q to %s: %v", ErrConnect, e.queue, BroadcastExchange, err)
	}
	if err := ch.Qos(rpcPrefetch, 0, false); err != nil {
		return fmt.Errorf("%w: qos: %v", ErrConnect, err)
	}
	deliveries, err := ch.Consume(e.queue, "", false, true, false, false, nil)
	if err != nil {
		return fmt.Errorf("%w: consume %q: %v", ErrConnect, e.queue, err)
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 8))
	calls := NewCalls(ch, e.token, e.queue)
	e.mu.Lock()
	e.ch, e.calls = ch, calls
	if e.ended != nil {
		calls.End(e.ended)
	}
	e.mu.Unlock()

	e.loops.Add(2)
	go func() {
		defer e.loops.Done()
		defer close(e.consumerEnded)
		for d := range deliveries {
			_ = d.Ack(false) // acked before handling: a bad message must never come back
			e.Handle(d)
		}
	}()
	go func() {
		defer e.loops.Done()
		for r := range returns {
			calls.Return(r)
		}
	}()
	return nil
}

// Channel is the endpoint's channel, nil before Open.
func (e *Endpoint) Channel() *amqp.Channel {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ch
}

// ConsumerEnded is closed when no request or reply can arrive any more:
// the channel or connection closed, or the broker cancelled the consumer.
func (e *Endpoint) ConsumerEnded() <-chan struct{} { return e.consumerEnded }

// Call sends a request to the manager (on metricq.management, keyed by
// function) and waits for its reply; see Calls.Call.
func (e *Endpoint) Call(ctx context.Context, function string, args map[string]any) (map[string]json.RawMessage, error) {
	e.mu.Lock()
	calls, ended := e.calls, e.ended
	e.mu.Unlock()
	switch {
	case ended != nil:
		return nil, ended
	case calls == nil:
		return nil, fmt.Errorf("%w: not connected", ErrConnect)
	}
	reply, err := calls.Call(ctx, ManagementExchange, function, function, args)
	if errors.Is(err, ErrUnroutable) {
		return nil, fmt.Errorf("%w: no MetricQ manager consumes %s", err, ManagementExchange)
	}
	return reply, err
}

// End fails every call waiting and every later one with err, and cancels
// the handlers' context; it tells whether it was this call that ended the
// endpoint. The connection is the caller's to close.
func (e *Endpoint) End(err error) bool {
	e.mu.Lock()
	first := e.ended == nil
	if first {
		e.ended = err
		if e.calls != nil {
			e.calls.End(err)
		}
	}
	e.mu.Unlock()
	e.cancel()
	return first
}

// Err says why the endpoint ended, nil while it is up.
func (e *Endpoint) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ended
}

// Wait waits for the consumer loops, which end with the connection.
func (e *Endpoint) Wait() { e.loops.Wait() }

// Idle waits for the handlers in flight.
func (e *Endpoint) Idle() { e.handling.Wait() }

// Incoming is what Classify makes of a message on an RPC queue.
type Incoming struct {
	Kind     IncomingKind
	Function string                     // for requests
	Args     map[string]json.RawMessage // for requests, without "function"
	Why      string                     // for drops and bad requests
}

// IncomingKind tells what to do with an incoming message.
type IncomingKind int

const (
	IncomingDrop         IncomingKind = iota // log and forget
	IncomingUnknownReply                     // a late reply: forget quietly
	IncomingRequest                          // call the handler
	IncomingBadRequest                       // answer with an error
)

// Classify tells replies from requests the way metricq-cpp and metricq-go
// do (a known correlation id was resolved before): anything with a string
// "function" is a request; anything else is an unknown reply, or garbage.
// It never fails: whatever the body, the message is dropped or answered.
func Classify(body []byte, replyTo string) Incoming {
	if len(body) > maxRPCBody {
		return Incoming{Kind: IncomingDrop, Why: fmt.Sprintf("body of %d bytes exceeds the limit of %d", len(body), maxRPCBody)}
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return Incoming{Kind: IncomingDrop, Why: "not a JSON object"}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &fields); err != nil || fields == nil {
		return Incoming{Kind: IncomingDrop, Why: "not a JSON object"}
	}
	raw, ok := fields["function"]
	if !ok {
		return Incoming{Kind: IncomingUnknownReply, Why: "reply with an unknown correlation id"}
	}
	delete(fields, "function")
	var function string
	if err := json.Unmarshal(raw, &function); err != nil {
		return Incoming{Kind: IncomingBadRequest, Why: "\"function\" is not a string", Args: fields}
	}
	if replyTo == "" {
		return Incoming{Kind: IncomingDrop, Function: function, Why: "request without reply_to"}
	}
	return Incoming{Kind: IncomingRequest, Function: function, Args: fields}
}

// Handle takes one message from the RPC queue: a reply goes to its call;
// unreadable messages are dropped with a log line, never requeued;
// requests get an answer, errors included; handler panics are caught.
func (e *Endpoint) Handle(d amqp.Delivery) {
	e.mu.Lock()
	calls := e.calls
	e.mu.Unlock()
	if calls != nil && calls.Deliver(d) {
		return
	}
	in := Classify(d.Body, d.ReplyTo)
	from := PrintableText(d.AppId, 100)
	switch in.Kind {
	case IncomingUnknownReply:
		e.log.Debug("dropping reply with unknown correlation id", "correlation_id", PrintableText(d.CorrelationId, 200), "from", from)
		return
	case IncomingDrop:
		e.log.Warn("dropping message on the RPC queue", "why", in.Why, "function", PrintableText(in.Function, 100), "bytes", len(d.Body), "from", from)
		return
	case IncomingBadRequest:
		e.log.Warn("bad RPC request", "why", in.Why, "from", from)
		if d.ReplyTo != "" {
			e.reply(d, map[string]string{"error": in.Why})
		}
		return
	}
	handler, ok := e.handlers[in.Function]
	if !ok {
		e.log.Warn("unknown RPC", "function", PrintableText(in.Function, 100), "from", from)
		e.reply(d, map[string]string{"error": fmt.Sprintf("'Missing rpc handler for %s'", PrintableText(in.Function, 255))})
		return
	}
	// Handlers may make RPCs themselves (a config handler declaring metrics),
	// whose replies arrive through this very loop: never block it.
	select {
	case e.busy <- struct{}{}:
	default:
		e.log.Warn("too many RPCs in progress, refusing one", "function", in.Function, "from", from)
		e.reply(d, map[string]string{"error": fmt.Sprintf("busy: %d RPCs in progress", maxRPCHandlers)})
		return
	}
	e.handling.Add(1)
	go func() {
		defer e.handling.Done()
		defer func() { <-e.busy }()
		result, err := callHandler(e.ctx, handler, in.Args, e.log)
		if err != nil {
			e.log.Error("RPC handler failed", "function", in.Function, "error", err)
			e.reply(d, map[string]string{"error": err.Error()})
			return
		}
		if result == nil {
			result = struct{}{}
		}
		e.reply(d, result)
	}()
}

// callHandler runs a handler, turning a panic into an error: a bad request
// must not take the host process down.
func callHandler(ctx context.Context, h Handler, args map[string]json.RawMessage, log *slog.Logger) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("RPC handler panicked", "panic", r, "stack", string(debug.Stack()))
			result, err = nil, fmt.Errorf("RPC handler panicked: %v", r)
		}
	}()
	return h(ctx, args)
}

func (e *Endpoint) reply(request amqp.Delivery, result any) {
	send := e.Reply
	if send == nil {
		send = e.publishReply
	}
	if err := send(e.ctx, request.ReplyTo, ReplyMessage(request, e.token, result)); err != nil {
		e.log.Warn("could not send RPC reply", "to", PrintableText(request.ReplyTo, 255), "error", err)
	}
}

// ReplyMessage is the answer of appID to request: result as JSON (an
// {"error": …} if it cannot be encoded), under the request's correlation id.
func ReplyMessage(request amqp.Delivery, appID string, result any) amqp.Publishing {
	body, err := json.Marshal(result)
	if err != nil {
		body, _ = json.Marshal(map[string]string{"error": "reply not encodable: " + err.Error()})
	}
	return amqp.Publishing{
		ContentType:   "application/json",
		CorrelationId: request.CorrelationId,
		AppId:         appID,
		DeliveryMode:  amqp.Transient,
		Body:          body,
	}
}

func (e *Endpoint) publishReply(ctx context.Context, queue string, msg amqp.Publishing) error {
	ch := e.Channel()
	if ch == nil {
		return errors.New("not connected")
	}
	if !utf8.ValidString(queue) || len(queue) > maxQueueName {
		return errors.New("reply_to is not a valid queue name")
	}
	return ch.PublishWithContext(ctx, "", queue, false, false, msg)
}
