package libmetricq_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// holdRPCQueue declares token's exclusive RPC queue on a connection of its
// own, as a previous process's half-open connection would still hold it.
// It returns the function that lets the queue go.
func holdRPCQueue(t *testing.T, url, token string) (release func()) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(amqpkit.RPCQueue(token), false, false, true, false, nil); err != nil {
		t.Fatal(err)
	}
	return func() { _ = conn.Close() }
}

// The first Connect rides out RESOURCE_LOCKED on the RPC queue, as the
// re-registration does, and connects once the queue is free.
func TestConnectWaitsForLockedQueue(t *testing.T) {
	startManager(t, manager.Config{})
	url, token := testenv.URL(t), testenv.Token(t, "locked")
	release := holdRPCQueue(t, url, token)
	logs := &logBuffer{}
	src, err := libmetricq.NewSource(url, token, libmetricq.WithLogger(logs.logger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Stop(context.Background()) })
	result := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		result <- src.Connect(ctx)
	}()
	waitUntil(t, 10*time.Second, "the connect to find the queue held", func() bool {
		return strings.Contains(logs.String(), "is held by another connection")
	})
	release()
	if err := <-result; err != nil {
		t.Fatalf("connect after the queue was let go: %v", err)
	}
	if !src.Connected() || !src.Stats().ManagementConnected {
		t.Fatalf("connected %v, stats %+v", src.Connected(), src.Stats())
	}
}

// A queue held for good ends the connect at its timeout, saying why.
func TestConnectLockedQueueTimesOut(t *testing.T) {
	startManager(t, manager.Config{})
	url, token := testenv.URL(t), testenv.Token(t, "locked")
	holdRPCQueue(t, url, token)
	src, err := libmetricq.NewSource(url, token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Stop(context.Background()) })
	const timeout = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err = src.Connect(ctx)
	took := time.Since(start)
	if !errors.Is(err, libmetricq.ErrConnect) || !strings.Contains(err.Error(), "is held by another connection") {
		t.Fatalf("connect: %v", err)
	}
	if took < timeout/2 || took > timeout+testenv.LateMargin {
		t.Fatalf("connect took %v with a %v timeout: retried until then?", took, timeout)
	}
}
