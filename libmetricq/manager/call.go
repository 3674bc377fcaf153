package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// defaultCallTimeout bounds Call when ctx has no deadline (the reference's
// RPC timeout).
const defaultCallTimeout = 60 * time.Second

// CallError is an {"error": …} reply from a client.
type CallError struct {
	Token    string // who replied
	Function string
	Message  string
}

func (e *CallError) Error() string {
	return fmt.Sprintf("rpc %s to %s: error reply: %s", e.Function, e.Token, e.Message)
}

// ErrNoClient: a direct RPC could not be routed, because no client with
// that token is connected (its "<token>-rpc" queue does not exist).
var ErrNoClient = errors.New("no such client")

// Reply is one answer to a broadcast.
type Reply struct {
	AppID string         // the responder's token
	Body  map[string]any // nil when the body was not a JSON object
	Raw   []byte
}

func (m *Manager) nextCorrelationID() string {
	return m.corrPrefix + strconv.FormatUint(m.corrSeq.Add(1), 10)
}

func (m *Manager) addPending(id string, f func(amqp.Delivery)) {
	m.pendMu.Lock()
	m.pending[id] = f
	m.pendMu.Unlock()
}

func (m *Manager) removePending(id string) {
	m.pendMu.Lock()
	delete(m.pending, id)
	m.pendMu.Unlock()
}

// resolve hands a message on "manager-rpc" to the call waiting for it.
func (m *Manager) resolve(d amqp.Delivery) {
	m.pendMu.Lock()
	f := m.pending[d.CorrelationId]
	m.pendMu.Unlock()
	if f == nil {
		m.log.Debug("dropping reply with unknown correlation id", "correlation_id", d.CorrelationId, "from", d.AppId)
		return
	}
	f(d)
}

// returned handles a direct RPC the broker could not route.
func (m *Manager) returned(r amqp.Return) {
	m.pendMu.Lock()
	f := m.pending[r.CorrelationId]
	m.pendMu.Unlock()
	if f != nil {
		// A delivery with type "returned" tells Call it bounced.
		f(amqp.Delivery{Type: "returned", RoutingKey: r.RoutingKey, CorrelationId: r.CorrelationId})
	}
}

func requestBody(function string, args map[string]any) ([]byte, error) {
	req := make(map[string]any, len(args)+1)
	for k, v := range args {
		req[k] = v
	}
	req["function"] = function
	return json.Marshal(req)
}

// Call sends a direct RPC to the client token, through the default exchange
// to its queue "<token>-rpc" (as the manager and the wizard send "config"),
// and waits for the reply. The request's app_id is "manager" and its
// reply_to "manager-rpc". An {"error": …} reply gives the reply and a
// *CallError; an unroutable request (no such client) ErrNoClient. Without a
// deadline in ctx, Call waits at most 60 s.
func (m *Manager) Call(ctx context.Context, token, function string, args map[string]any) (map[string]any, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultCallTimeout)
		defer cancel()
	}
	body, err := requestBody(function, args)
	if err != nil {
		return nil, fmt.Errorf("rpc %s: encode arguments: %w", function, err)
	}
	id := m.nextCorrelationID()
	got := make(chan amqp.Delivery, 1)
	m.addPending(id, func(d amqp.Delivery) {
		select {
		case got <- d:
		default:
		}
	})
	defer m.removePending(id)
	err = m.rpcCh.PublishWithContext(ctx, "", token+"-rpc", true, false, amqp.Publishing{
		ContentType:   "application/json",
		CorrelationId: id,
		ReplyTo:       Token + "-rpc",
		AppId:         Token,
		DeliveryMode:  amqp.Transient,
		Body:          body,
	})
	if err != nil {
		return nil, fmt.Errorf("rpc %s to %s: publish: %w", function, token, err)
	}
	select {
	case d := <-got:
		if d.Type == "returned" {
			return nil, fmt.Errorf("rpc %s to %s: %w (queue %s-rpc does not exist)", function, token, ErrNoClient, token)
		}
		var reply map[string]any
		if err := json.Unmarshal(d.Body, &reply); err != nil || reply == nil {
			return nil, fmt.Errorf("rpc %s to %s: reply is not a JSON object (%d bytes)", function, token, len(d.Body))
		}
		if e, ok := reply["error"]; ok {
			msg, isString := e.(string)
			if !isString {
				b, _ := json.Marshal(e)
				msg = string(b)
			}
			return reply, &CallError{Token: token, Function: function, Message: msg}
		}
		return reply, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("rpc %s to %s: no reply: %w", function, token, ctx.Err())
	case <-m.done:
		return nil, fmt.Errorf("rpc %s to %s: manager stopped", function, token)
	}
}

// Broadcast publishes an RPC to metricq.broadcast (as metricq-discover does
// with "discover") and collects every reply that arrives within timeout, in
// arrival order. When ctx ends first it returns what it has with ctx's
// error.
func (m *Manager) Broadcast(ctx context.Context, function string, args map[string]any, timeout time.Duration) ([]Reply, error) {
	body, err := requestBody(function, args)
	if err != nil {
		return nil, fmt.Errorf("broadcast %s: encode arguments: %w", function, err)
	}
	id := m.nextCorrelationID()
	var (
		mu      sync.Mutex
		replies []Reply
	)
	m.addPending(id, func(d amqp.Delivery) {
		r := Reply{AppID: d.AppId, Raw: d.Body}
		if err := json.Unmarshal(d.Body, &r.Body); err != nil {
			r.Body = nil
		}
		mu.Lock()
		replies = append(replies, r)
		mu.Unlock()
	})
	defer m.removePending(id)
	err = m.rpcCh.PublishWithContext(ctx, BroadcastExchange, function, false, false, amqp.Publishing{
		ContentType:   "application/json",
		CorrelationId: id,
		ReplyTo:       Token + "-rpc",
		AppId:         Token,
		DeliveryMode:  amqp.Transient,
		Body:          body,
	})
	if err != nil {
		return nil, fmt.Errorf("broadcast %s: publish: %w", function, err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-timer.C:
		err = nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-m.done:
		err = errors.New("manager stopped")
	}
	m.removePending(id)
	mu.Lock()
	defer mu.Unlock()
	return append([]Reply(nil), replies...), err
}
