package main

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// rawBodies pre-encodes distinct DataChunks of chunk points each, with
// timestamps 1 us apart (the spacing the C and Python producers use), so the
// bodies have the size of theirs.
func rawBodies(chunk int) [][]byte {
	const distinct = 16
	bodies := make([][]byte, distinct)
	t := libmetricq.Now()
	for i := range bodies {
		pts := make([]libmetricq.Point, chunk)
		for j := range pts {
			t += 1000
			pts[j] = libmetricq.Point{Time: t, Value: float64(j)}
		}
		bodies[i] = libmetricq.EncodeDataChunk(pts)
	}
	return bodies
}

// rawPublish is the ceiling: amqp091-go publishing pre-encoded chunks to
// metricq.data on a connection of its own, with publisher confirms
// (asynchronous: a goroutine collects them; the run ends when all are in) or
// without. It returns the start and the moment the last publish returned
// (and, with confirms, the last confirmation arrived).
func rawPublish(ctx context.Context, url, key string, bodies [][]byte, chunks int, confirm bool) (start, end int64, err error) {
	conn, err := amqp.DialConfig(url, amqp.Config{Properties: amqp.Table{"connection_name": "bench raw publisher"}})
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, 0, err
	}
	var acked chan error
	if confirm {
		if err := ch.Confirm(false); err != nil {
			return 0, 0, err
		}
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 4096))
		acked = make(chan error, 1)
		go func() {
			n := 0
			for c := range confirms {
				if !c.Ack {
					acked <- fmt.Errorf("nack for tag %d", c.DeliveryTag)
					return
				}
				if n++; n == chunks {
					acked <- nil
					return
				}
			}
			acked <- fmt.Errorf("confirmations ended after %d of %d", n, chunks)
		}()
	}
	start = time.Now().UnixNano()
	for i := range chunks {
		if err := ch.PublishWithContext(ctx, amqpkit.DataExchange, key, false, false, amqp.Publishing{
			DeliveryMode: amqp.Transient,
			Body:         bodies[i%len(bodies)],
		}); err != nil {
			return 0, 0, err
		}
	}
	if confirm {
		select {
		case err := <-acked:
			if err != nil {
				return 0, 0, err
			}
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
	}
	return start, time.Now().UnixNano(), nil
}

// rawPaced publishes one 1-point chunk, stamped with the time just before
// the publish, every 1/rate s for seconds, without confirms: the latency
// floor of broker and sink.
func rawPaced(ctx context.Context, url, key string, rate, seconds int) (start, end int64, err error) {
	conn, err := amqp.DialConfig(url, amqp.Config{Properties: amqp.Table{"connection_name": "bench raw paced publisher"}})
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, 0, err
	}
	period := time.Second / time.Duration(rate)
	begin := time.Now()
	start = begin.UnixNano()
	var last libmetricq.Timestamp
	for i := range rate * seconds {
		if d := time.Until(begin.Add(time.Duration(i) * period)); d > 0 {
			time.Sleep(d)
		}
		t := libmetricq.Now()
		if t <= last {
			t = last + 1
		}
		last = t
		body := libmetricq.EncodeDataChunk([]libmetricq.Point{{Time: t, Value: 1}})
		if err := ch.PublishWithContext(ctx, amqpkit.DataExchange, key, false, false, amqp.Publishing{DeliveryMode: amqp.Transient, Body: body}); err != nil {
			return 0, 0, err
		}
	}
	return start, time.Now().UnixNano(), nil
}
