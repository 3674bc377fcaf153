package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
	"github.com/libmetricq/libmetricq/internal/manager"
)

// catalog asks the manager which metrics are declared, with their metadata
// (the get_metrics RPC, format "object"). Replies come back through
// RabbitMQ's direct reply-to, so it needs no queue of its own.
type catalog struct {
	conn  *amqp.Connection
	calls *amqpkit.Calls
	done  chan struct{} // closed when the reply consumer has ended
}

const directReplyTo = "amq.rabbitmq.reply-to"

func dialCatalog(rawURL, token string) (*catalog, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := manager.Dial(ctx, rawURL, "metadata "+token)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	var replies <-chan amqp.Delivery
	if err == nil {
		replies, err = ch.Consume(directReplyTo, "", true, false, false, false, nil)
	}
	if err != nil {
		amqpkit.Close(conn)
		return nil, fmt.Errorf("get_metrics: %w", err)
	}
	c := &catalog{conn: conn, calls: amqpkit.NewCalls(ch, token, directReplyTo), done: make(chan struct{})}
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	go func() {
		defer close(c.done)
		for d := range replies {
			c.calls.Deliver(d)
		}
		c.calls.End(errors.New("get_metrics: connection closed"))
	}()
	go func() {
		for r := range returns {
			c.calls.Return(r)
		}
	}()
	return c, nil
}

// getMetrics returns the declared metrics: name -> metadata, without the
// store's "_id" and "_rev".
func (c *catalog) getMetrics(ctx context.Context) (map[string]map[string]any, error) {
	reply, err := c.calls.Call(ctx, amqpkit.ManagementExchange, "get_metrics", "get_metrics", map[string]any{"format": "object"})
	if err != nil {
		return nil, fmt.Errorf("get_metrics: %w", err)
	}
	var metrics map[string]map[string]any
	if raw, ok := reply["metrics"]; ok {
		if err := json.Unmarshal(raw, &metrics); err != nil {
			return nil, fmt.Errorf("get_metrics: reply: %w", err)
		}
	}
	for _, md := range metrics {
		delete(md, "_id")
		delete(md, "_rev")
	}
	return metrics, nil
}

func (c *catalog) close() {
	amqpkit.Close(c.conn)
	<-c.done
}
