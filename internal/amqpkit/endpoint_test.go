package amqpkit

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/testenv"
)

func TestCheckExchangesNamesTheMissingManager(t *testing.T) {
	conn, _ := callsOnBroker(t)
	missing := testenv.Token(t, "amqpkit-absent")
	err := CheckExchanges(conn, missing)
	if !errors.Is(err, ErrConnect) || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "MetricQ manager") {
		t.Errorf("missing exchange: %v", err)
	}
}

// TestEndpointServesRequests opens a client endpoint as a source does and
// calls it the way a manager does: straight to its "<token>-rpc" queue.
func TestEndpointServesRequests(t *testing.T) {
	conn, calls := callsOnBroker(t)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	// As the manager declares them, so that this test and a running
	// manager agree.
	if err := ch.ExchangeDeclare(ManagementExchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(BroadcastExchange, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	token := testenv.Token(t, "amqpkit-endpoint")
	started := time.Now()
	endpoint := NewEndpoint(token, map[string]Handler{
		"discover": Discover(started, "libmetricq/test", "app 1.0"),
		"boom":     func(context.Context, map[string]json.RawMessage) (any, error) { panic("boom") },
		"nothing":  func(context.Context, map[string]json.RawMessage) (any, error) { return nil, nil },
	}, slog.New(slog.DiscardHandler))
	if err := endpoint.Open(conn); err != nil {
		t.Fatal(err)
	}
	defer endpoint.End(errors.New("test over"))

	// The queue is exclusive: a second client with the token is refused,
	// with a reason.
	other, _ := callsOnBroker(t)
	err = NewEndpoint(token, nil, slog.New(slog.DiscardHandler)).Open(other)
	if !errors.Is(err, ErrConnect) || !strings.Contains(err.Error(), "held by another connection") {
		t.Errorf("second endpoint with the same token: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := calls.Call(ctx, "", RPCQueue(token), "discover", nil)
	if err != nil {
		t.Fatal(err)
	}
	var discover struct {
		Alive          bool   `json:"alive"`
		MetricqVersion string `json:"metricqVersion"`
		Version        string `json:"version"`
		StartingTime   string `json:"startingTime"`
	}
	body, _ := json.Marshal(reply)
	if err := json.Unmarshal(body, &discover); err != nil {
		t.Fatal(err)
	}
	if !discover.Alive || discover.MetricqVersion != "libmetricq/test" || discover.Version != "app 1.0" || discover.StartingTime != ISOTime(started) {
		t.Errorf("discover reply %s", body)
	}

	if reply, err := calls.Call(ctx, "", RPCQueue(token), "nothing", nil); err != nil || len(reply) != 0 {
		t.Errorf("a nil result: %v, %v; want {}", reply, err)
	}
	var rpcErr *RPCError
	if _, err := calls.Call(ctx, "", RPCQueue(token), "boom", nil); !errors.As(err, &rpcErr) || !strings.Contains(rpcErr.Message, "panicked") {
		t.Errorf("a panicking handler: %v; want an error reply", err)
	}
	if _, err := calls.Call(ctx, "", RPCQueue(token), "no.such.rpc", nil); !errors.As(err, &rpcErr) || rpcErr.Message != "'Missing rpc handler for no.such.rpc'" {
		t.Errorf("an unknown function: %v; want the reference's error reply", err)
	}
}
