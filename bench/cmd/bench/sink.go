package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
)

// sink is a raw AMQP consumer of metricq.data (a server-named, exclusive
// queue bound to "bench.#", no acks) that counts points per routing-key
// prefix. It decodes only what it needs: the length of the packed values
// field (points = bytes/8), and, for latency watches, the time deltas.
type sink struct {
	conn *amqp.Connection
	ch   *amqp.Channel

	mu      sync.Mutex
	watches []*watch
	stray   int64 // points no watch wanted
	bad     int64 // bodies that did not parse

	done chan struct{}
}

// watch waits for want points on routing keys starting with prefix.
type watch struct {
	prefix   string
	want     int64
	latency  bool
	got      int64
	chunks   int64
	firstNs  int64 // receipt of the first chunk
	lastNs   int64 // receipt of the chunk that completed the count
	lat      []int64
	complete chan struct{}
}

func newSink(url string) (*sink, error) {
	conn, err := amqp.DialConfig(url, amqp.Config{Properties: amqp.Table{"connection_name": "bench sink"}})
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("sink: %w", err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err == nil {
		err = ch.QueueBind(q.Name, "bench.#", amqpkit.DataExchange, false, nil)
	}
	var deliveries <-chan amqp.Delivery
	if err == nil {
		deliveries, err = ch.Consume(q.Name, "bench-sink", true, true, false, false, nil)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("sink: %w", err)
	}
	s := &sink{conn: conn, ch: ch, done: make(chan struct{})}
	go s.consume(deliveries)
	return s, nil
}

func (s *sink) close() {
	s.conn.Close()
	<-s.done
}

// expect registers a watch; call it before the producer starts.
func (s *sink) expect(prefix string, points int64, latency bool) *watch {
	w := &watch{prefix: prefix, want: points, latency: latency, complete: make(chan struct{})}
	if latency {
		w.lat = make([]int64, 0, points)
	}
	s.mu.Lock()
	s.watches = append(s.watches, w)
	s.mu.Unlock()
	return w
}

// wait blocks until the watch is complete or ctx ends, then removes it.
func (s *sink) wait(ctx context.Context, w *watch) error {
	defer s.remove(w)
	select {
	case <-w.complete:
		return nil
	case <-s.done:
		return errors.New("sink: connection closed")
	case <-ctx.Done():
		s.mu.Lock()
		got := w.got
		s.mu.Unlock()
		return fmt.Errorf("sink received %d of %d points on %s.*: %w", got, w.want, w.prefix, ctx.Err())
	}
}

func (s *sink) remove(w *watch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.watches {
		if x == w {
			s.watches = append(s.watches[:i], s.watches[i+1:]...)
			return
		}
	}
}

func (s *sink) consume(deliveries <-chan amqp.Delivery) {
	defer close(s.done)
	for d := range deliveries {
		now := time.Now().UnixNano()
		s.mu.Lock()
		var w *watch
		for _, x := range s.watches {
			if strings.HasPrefix(d.RoutingKey, x.prefix) {
				w = x
				break
			}
		}
		points, last, ok := countPoints(d.Body, w != nil && w.latency)
		switch {
		case !ok:
			s.bad++
		case w == nil:
			s.stray += points
		default:
			if w.chunks == 0 {
				w.firstNs = now
			}
			w.chunks++
			w.got += points
			if w.latency {
				w.lat = append(w.lat, now-last)
			}
			if w.got >= w.want && w.lastNs == 0 {
				w.lastNs = now
				close(w.complete)
			}
		}
		s.mu.Unlock()
	}
}

// countPoints reads a DataChunk: the number of values (packed doubles) and,
// when withTime, the absolute time of the last point (the sum of the
// deltas).
func countPoints(b []byte, withTime bool) (points, last int64, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, 0, false
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return 0, 0, false
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return 0, 0, false
		}
		b = b[n:]
		switch num {
		case 1:
			if withTime {
				for len(v) > 0 {
					d, m := protowire.ConsumeVarint(v)
					if m < 0 {
						return 0, 0, false
					}
					last += int64(d)
					v = v[m:]
				}
			}
		case 2:
			points += int64(len(v) / 8)
		}
	}
	return points, last, true
}
