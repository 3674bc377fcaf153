package amqpkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrUnroutable: the broker returned a request because no queue takes it
// (a direct RPC to a client that is not connected, or no manager).
var ErrUnroutable = errors.New("request unroutable")

// Calls sends RPCs on one channel and hands each reply arriving on the
// caller's queue to the call waiting for it, matched by correlation id.
// The owner of the queue passes every message to Deliver and every return
// of the channel to Return.
type Calls struct {
	ch      *amqp.Channel
	appID   string // the requests' app_id: who calls
	replyTo string // the queue the replies come to
	prefix  string
	seq     atomic.Uint64

	mu      sync.Mutex
	waiting map[string]func(answer)
	ended   error
}

// answer is what comes of a request: a reply, the request returned, or
// the end of Calls.
type answer struct {
	reply    amqp.Delivery
	returned *amqp.Return
	ended    bool
}

// NewCalls prepares RPCs sent on ch as appID, answered to replyTo.
func NewCalls(ch *amqp.Channel, appID, replyTo string) *Calls {
	var random [6]byte
	_, _ = rand.Read(random[:])
	return &Calls{
		ch:      ch,
		appID:   appID,
		replyTo: replyTo,
		// Unique per connection: a late reply to an earlier connection's
		// call is never taken for a reply to this one's.
		prefix:  appID + "-" + hex.EncodeToString(random[:]) + "-",
		waiting: make(map[string]func(answer)),
	}
}

// Call sends function(args) to exchange with routing key key and waits for
// the one reply, ctx bounding the wait. An {"error": …} reply becomes an
// *RPCError; a request nobody takes an error wrapping ErrUnroutable; a
// failed publish or an ended Calls an error wrapping ErrConnect (or the
// error End was given).
func (c *Calls) Call(ctx context.Context, exchange, key, function string, args map[string]any) (map[string]json.RawMessage, error) {
	got := make(chan answer, 1)
	id, err := c.send(ctx, exchange, key, true, function, args, func(a answer) {
		select {
		case got <- a:
		default:
		}
	})
	if err != nil {
		return nil, err
	}
	defer c.forget(id)
	select {
	case a := <-got:
		if r := a.returned; r != nil {
			return nil, fmt.Errorf("%w: rpc %s: %w: nobody takes %q on %q (%s)", ErrRPC, function, ErrUnroutable, r.RoutingKey, r.Exchange, r.ReplyText)
		}
		if a.ended {
			return nil, c.endedErr()
		}
		return ParseReply(function, a.reply.Body)
	case <-ctx.Done():
		return nil, fmt.Errorf("rpc %s: no reply: %w", function, ctx.Err())
	}
}

// Gather sends function(args) to exchange (a broadcast) and collects every
// reply that arrives within window, in arrival order. When ctx ends first,
// or Calls ends, it returns what it has with the reason.
func (c *Calls) Gather(ctx context.Context, exchange, function string, args map[string]any, window time.Duration) ([]amqp.Delivery, error) {
	var (
		mu      sync.Mutex
		replies []amqp.Delivery
		ended   = make(chan struct{})
		once    sync.Once
	)
	id, err := c.send(ctx, exchange, function, false, function, args, func(a answer) {
		if a.ended {
			once.Do(func() { close(ended) })
			return
		}
		mu.Lock()
		replies = append(replies, a.reply)
		mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(window)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
		err = ctx.Err()
	case <-ended:
		err = c.endedErr()
	}
	c.forget(id)
	mu.Lock()
	defer mu.Unlock()
	return append([]amqp.Delivery(nil), replies...), err
}

func (c *Calls) send(ctx context.Context, exchange, key string, mandatory bool, function string, args map[string]any, onAnswer func(answer)) (string, error) {
	request := make(map[string]any, len(args)+1)
	for k, v := range args {
		request[k] = v
	}
	request["function"] = function
	body, err := json.Marshal(request)
	if err != nil {
		return "", fmt.Errorf("%w: rpc %s: encode arguments: %v", ErrInvalid, function, err)
	}
	id := c.prefix + strconv.FormatUint(c.seq.Add(1), 10)
	c.mu.Lock()
	ended := c.ended
	if ended == nil {
		c.waiting[id] = onAnswer
	}
	c.mu.Unlock()
	if ended != nil {
		return "", ended
	}
	err = c.ch.PublishWithContext(ctx, exchange, key, mandatory, false, amqp.Publishing{
		ContentType:   "application/json",
		CorrelationId: id,
		ReplyTo:       c.replyTo,
		AppId:         c.appID,
		DeliveryMode:  amqp.Transient,
		Body:          body,
	})
	if err != nil {
		c.forget(id)
		if ctx.Err() != nil {
			return "", fmt.Errorf("rpc %s: %w", function, ctx.Err())
		}
		return "", fmt.Errorf("%w: rpc %s: publish: %v", ErrConnect, function, err)
	}
	return id, nil
}

func (c *Calls) forget(id string) {
	c.mu.Lock()
	delete(c.waiting, id)
	c.mu.Unlock()
}

func (c *Calls) answer(id string, a answer) bool {
	c.mu.Lock()
	onAnswer := c.waiting[id]
	c.mu.Unlock()
	if onAnswer == nil {
		return false
	}
	onAnswer(a)
	return true
}

// Deliver hands a message from the reply queue to the call waiting for it,
// and tells whether there was one: if not, the message is something else (a
// request, or a reply too late).
func (c *Calls) Deliver(d amqp.Delivery) bool {
	return d.CorrelationId != "" && c.answer(d.CorrelationId, answer{reply: d})
}

// Return hands a request the broker returned to the call that sent it.
func (c *Calls) Return(r amqp.Return) {
	c.answer(r.CorrelationId, answer{returned: &r})
}

// End fails every waiting call, and every later one, with err.
func (c *Calls) End(err error) {
	c.mu.Lock()
	if c.ended != nil {
		c.mu.Unlock()
		return
	}
	c.ended = err
	waiting := c.waiting
	c.waiting = make(map[string]func(answer))
	c.mu.Unlock()
	for _, onAnswer := range waiting {
		onAnswer(answer{ended: true})
	}
}

func (c *Calls) endedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ended
}

// ParseReply reads a reply body: a JSON object, or an *RPCError for an
// {"error": …} reply or anything unreadable.
func ParseReply(function string, body []byte) (map[string]json.RawMessage, error) {
	var reply map[string]json.RawMessage
	if err := json.Unmarshal(body, &reply); err != nil || reply == nil {
		return nil, &RPCError{Function: function, Message: fmt.Sprintf("unreadable reply (%d bytes, not a JSON object)", len(body))}
	}
	if raw, ok := reply["error"]; ok {
		var text string
		if json.Unmarshal(raw, &text) != nil {
			text = string(raw)
		}
		return nil, &RPCError{Function: function, Message: PrintableText(text, 1000)}
	}
	return reply, nil
}
