package amqpkit

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/testenv"
)

// callsOnBroker opens a connection and a Calls answered on a queue of its
// own, whose messages go to Deliver and whose returns go to Return.
func callsOnBroker(t *testing.T) (*amqp.Connection, *Calls) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := Dial(ctx, testenv.URL(t), DialOptions{Name: "amqpkit test " + t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Close(conn) })
	ch, queue, replies := consumeNewQueue(t, conn)
	calls := NewCalls(ch, "amqpkit-test", queue)
	returns := ch.NotifyReturn(make(chan amqp.Return, 4))
	go func() {
		for d := range replies {
			calls.Deliver(d)
		}
	}()
	go func() {
		for r := range returns {
			calls.Return(r)
		}
	}()
	return conn, calls
}

// consumeNewQueue declares a server-named queue on a new channel and
// consumes it, acknowledging automatically.
func consumeNewQueue(t *testing.T, conn *amqp.Connection) (*amqp.Channel, string, <-chan amqp.Delivery) {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ch, q.Name, deliveries
}

// serveEcho answers every request on a new queue with its own body plus
// "from": name, or with {"error": …} when the request has "fail".
func serveEcho(t *testing.T, conn *amqp.Connection, name string) string {
	t.Helper()
	ch, queue, requests := consumeNewQueue(t, conn)
	go func() {
		for d := range requests {
			var body map[string]any
			_ = json.Unmarshal(d.Body, &body)
			body["from"] = name
			if _, fail := body["fail"]; fail {
				body = map[string]any{"error": "refused by " + name}
			}
			out, _ := json.Marshal(body)
			_ = ch.Publish("", d.ReplyTo, false, false, amqp.Publishing{CorrelationId: d.CorrelationId, AppId: name, Body: out})
		}
	}()
	return queue
}

func TestCallsMatchRepliesByCorrelationID(t *testing.T) {
	conn, calls := callsOnBroker(t)
	queue := serveEcho(t, conn, "echo")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	reply, err := calls.Call(ctx, "", queue, "ping", map[string]any{"n": 7})
	if err != nil {
		t.Fatal(err)
	}
	if string(reply["function"]) != `"ping"` || string(reply["n"]) != "7" || string(reply["from"]) != `"echo"` {
		t.Errorf("reply %v", reply)
	}

	_, err = calls.Call(ctx, "", queue, "ping", map[string]any{"fail": true})
	var rpcErr *RPCError
	if !errors.As(err, &rpcErr) || rpcErr.Message != "refused by echo" || !errors.Is(err, ErrRPC) {
		t.Errorf("error reply: %v", err)
	}

	_, err = calls.Call(ctx, "", "amqpkit-test-no-such-queue", "ping", nil)
	if !errors.Is(err, ErrUnroutable) {
		t.Errorf("call to a missing queue: %v, want ErrUnroutable", err)
	}

	_, err = calls.Call(ctx, "", queue, "ping", map[string]any{"bad": func() {}})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("unencodable arguments: %v, want ErrInvalid", err)
	}
}

func TestCallsGatherAndEnd(t *testing.T) {
	conn, calls := callsOnBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	const exchange = "amqpkit-test-fanout"
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeFanout, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		if err := ch.QueueBind(serveEcho(t, conn, name), "", exchange, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	replies, err := calls.Gather(ctx, exchange, "discover", nil, time.Second)
	if err != nil || len(replies) != 2 {
		t.Fatalf("gather: %d replies, %v; want 2", len(replies), err)
	}
	from := map[string]bool{replies[0].AppId: true, replies[1].AppId: true}
	if !from["a"] || !from["b"] {
		t.Errorf("replies from %v, want a and b", from)
	}

	// A call nobody answers fails with the reason End gives, at once.
	_, silent, _ := consumeNewQueue(t, conn)
	ended := errors.New("ended by the test")
	result := make(chan error, 1)
	go func() {
		_, err := calls.Call(ctx, "", silent, "ping", nil)
		result <- err
	}()
	// Ends the call whether it is waiting already or not sent yet.
	calls.End(ended)
	if err := <-result; !errors.Is(err, ended) {
		t.Errorf("call across End: %v, want %v", err, ended)
	}
	if _, err := calls.Call(ctx, "", silent, "ping", nil); !errors.Is(err, ended) {
		t.Errorf("call after End: %v, want %v", err, ended)
	}
}
