package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
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

// Call sends a direct RPC to the client token, through the default exchange
// to its queue "<token>-rpc" (as the manager and the wizard send "config"),
// and waits for the reply. The request's app_id is "manager" and its
// reply_to "manager-rpc". An {"error": …} reply gives a *CallError; an unroutable request (no such client) ErrNoClient. Without a
// deadline in ctx, Call waits at most 60 s.
func (m *Manager) Call(ctx context.Context, token, function string, args map[string]any) (map[string]any, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultCallTimeout)
		defer cancel()
	}
	raw, err := m.calls.Call(ctx, "", amqpkit.RPCQueue(token), function, args)
	var rpcErr *amqpkit.RPCError
	switch {
	case errors.As(err, &rpcErr):
		return nil, &CallError{Token: token, Function: function, Message: rpcErr.Message}
	case errors.Is(err, amqpkit.ErrUnroutable):
		return nil, fmt.Errorf("rpc %s to %s: %w (queue %s does not exist)", function, token, ErrNoClient, amqpkit.RPCQueue(token))
	case err != nil:
		return nil, fmt.Errorf("to %s: %w", token, err)
	}
	reply := make(map[string]any, len(raw))
	for k, v := range raw {
		var value any
		if err := json.Unmarshal(v, &value); err != nil {
			return nil, fmt.Errorf("rpc %s to %s: reply field %q: %w", function, token, k, err)
		}
		reply[k] = value
	}
	return reply, nil
}

// Broadcast publishes an RPC to metricq.broadcast (as metricq-discover does
// with "discover") and collects every reply that arrives within timeout, in
// arrival order. When ctx ends first it returns what it has with ctx's
// error.
func (m *Manager) Broadcast(ctx context.Context, function string, args map[string]any, timeout time.Duration) ([]Reply, error) {
	deliveries, err := m.calls.Gather(ctx, amqpkit.BroadcastExchange, function, args, timeout)
	replies := make([]Reply, len(deliveries))
	for i, d := range deliveries {
		replies[i] = Reply{AppID: d.AppId, Raw: d.Body}
		if json.Unmarshal(d.Body, &replies[i].Body) != nil {
			replies[i].Body = nil
		}
	}
	if err != nil {
		return replies, fmt.Errorf("broadcast %s: %w", function, err)
	}
	return replies, nil
}
