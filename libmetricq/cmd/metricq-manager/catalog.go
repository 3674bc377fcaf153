package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
	"github.com/libmetricq/libmetricq/libmetricq"
	"github.com/libmetricq/libmetricq/libmetricq/manager"
)

// catalog asks the manager which metrics are declared, with their metadata
// (the get_metrics RPC, format "object"). Replies come back through
// RabbitMQ's direct reply-to, so it needs no queue of its own.
type catalog struct {
	conn    *amqp.Connection
	ch      *amqp.Channel
	replies <-chan amqp.Delivery
	token   string
	seq     atomic.Uint64
}

const directReplyTo = "amq.rabbitmq.reply-to"

func dialCatalog(rawURL, token string) (*catalog, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := amqpkit.Dial(ctx, rawURL, amqpkit.DialOptions{
		Name:      "metadata " + token,
		Heartbeat: libmetricq.DefaultHeartbeat,
		Product:   libmetricq.LibraryName,
		Version:   libmetricq.Version,
	})
	if err != nil {
		return nil, err
	}
	c := &catalog{conn: conn, token: token}
	if c.ch, err = conn.Channel(); err == nil {
		c.replies, err = c.ch.Consume(directReplyTo, "", true, false, false, false, nil)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("get_metrics: %w", err)
	}
	return c, nil
}

// getMetrics returns the declared metrics: name -> metadata, without the
// store's "_id" and "_rev".
func (c *catalog) getMetrics(ctx context.Context) (map[string]map[string]any, error) {
	id := c.token + "-get-metrics-" + strconv.FormatUint(c.seq.Add(1), 10)
	err := c.ch.PublishWithContext(ctx, manager.ManagementExchange, "get_metrics", false, false, amqp.Publishing{
		ContentType:   "application/json",
		CorrelationId: id,
		ReplyTo:       directReplyTo,
		AppId:         c.token,
		DeliveryMode:  amqp.Transient,
		Body:          []byte(`{"function":"get_metrics","format":"object"}`),
	})
	if err != nil {
		return nil, fmt.Errorf("get_metrics: %w", err)
	}
	for {
		select {
		case d, ok := <-c.replies:
			if !ok {
				return nil, errors.New("get_metrics: connection closed")
			}
			if d.CorrelationId != id {
				continue // the reply to an earlier call that timed out
			}
			var reply struct {
				Metrics map[string]map[string]any `json:"metrics"`
				Error   any                       `json:"error"`
			}
			if err := json.Unmarshal(d.Body, &reply); err != nil {
				return nil, fmt.Errorf("get_metrics: reply: %w", err)
			}
			if reply.Error != nil {
				return nil, fmt.Errorf("get_metrics: manager replied with an error: %v", reply.Error)
			}
			for _, md := range reply.Metrics {
				delete(md, "_id")
				delete(md, "_rev")
			}
			return reply.Metrics, nil
		case <-ctx.Done():
			return nil, fmt.Errorf("get_metrics: no reply from the manager: %w", ctx.Err())
		}
	}
}

func (c *catalog) close() { c.conn.Close() }
