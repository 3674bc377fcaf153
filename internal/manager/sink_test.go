package manager

import (
	"context"
	"errors"
	"math"
	"reflect"
	"regexp"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// publisher publishes to metricq.data with publisher confirms, so that once
// publish returns the broker has routed the message.
type publisher struct {
	t  *testing.T
	ch *amqp.Channel
}

func newPublisher(t *testing.T) *publisher {
	t.Helper()
	conn, err := amqp.Dial(testenv.URL(t))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	return &publisher{t: t, ch: ch}
}

func (p *publisher) publish(exchange, key string, msg amqp.Publishing) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conf, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, msg)
	if err != nil {
		p.t.Fatalf("publish: %v", err)
	}
	if ok, err := conf.WaitContext(ctx); !ok || err != nil {
		p.t.Fatalf("publish not confirmed: %v", err)
	}
}

func (p *publisher) chunk(metric string, points []libmetricq.Point) {
	p.t.Helper()
	p.publish(amqpkit.DataExchange, metric, amqp.Publishing{Body: libmetricq.EncodeDataChunk(points)})
}

func receive(t *testing.T, sub *Subscription) Chunk {
	t.Helper()
	select {
	case c, ok := <-sub.Chunks():
		if !ok {
			t.Fatalf("Chunks closed: %v", sub.Err())
		}
		return c
	case <-time.After(waitTimeout):
		t.Fatalf("no data within %v", waitTimeout)
	}
	return Chunk{}
}

func TestSubscribeReceivesChunks(t *testing.T) {
	startManager(t, Config{})
	source := newClient(t, testenv.Token(t, "source"))
	metric := "test.sub." + source.token[len(source.token)-8:] + ".power"
	source.callOK("source.declare_metrics", map[string]any{"metrics": map[string]any{metric: map[string]any{"unit": "W"}}})

	token := testenv.Token(t, "sink")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sub, err := Subscribe(ctx, testenv.URL(t), token, []string{metric, "test.never.declared"})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	defer sub.Close()
	if !regexp.MustCompile(`^` + regexp.QuoteMeta(token) + `-[0-9a-f]{32}-data$`).MatchString(sub.DataQueue()) {
		t.Errorf("data queue name %q, want <token>-<uuid hex>-data", sub.DataQueue())
	}
	md, _ := sub.Metadata()[metric].(map[string]any)
	if md["unit"] != "W" || md["_id"] != metric || md["source"] != source.token {
		t.Errorf("subscribe reply metadata: %v", sub.Metadata())
	}
	if v, ok := sub.Metadata()["test.never.declared"]; !ok || v != nil {
		t.Errorf("undeclared metric: %v (present %v), want null", v, ok)
	}

	pub := newPublisher(t)
	// Not subscribed: must not arrive (it would come first).
	pub.chunk(metric+".other", []libmetricq.Point{{Time: 1, Value: 1}})
	t0 := libmetricq.Timestamp(1_700_000_000_000_000_000)
	want := []libmetricq.Point{{Time: t0, Value: 1}, {Time: t0 + 100_000_000, Value: 2.5}, {Time: t0 + 200_000_000, Value: math.Inf(-1)}}
	pub.chunk(metric, want)
	// A message that is not a DataChunk is dropped, the next one arrives.
	pub.publish(amqpkit.DataExchange, metric, amqp.Publishing{Body: []byte{0x0a, 0xff}})
	pub.chunk(metric, want[:1])

	got := receive(t, sub)
	if got.Metric != metric || !reflect.DeepEqual(got.Points, want) {
		t.Errorf("chunk = %+v, want %s %v", got, metric, want)
	}
	got = receive(t, sub)
	if got.Metric != metric || !reflect.DeepEqual(got.Points, want[:1]) {
		t.Errorf("after an undecodable message: %+v", got)
	}

	if err := sub.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, ok := <-sub.Chunks(); ok {
		t.Error("Chunks still open after Close")
	}
	if sub.Err() != nil {
		t.Errorf("Err after Close = %v, want nil", sub.Err())
	}
}

func TestSubscribeEverything(t *testing.T) {
	startManager(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sub, err := Subscribe(ctx, testenv.URL(t), testenv.Token(t, "sink"), []string{"#"})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	defer sub.Close()
	pub := newPublisher(t)
	pub.chunk("any.metric.at.all", []libmetricq.Point{{Time: 42, Value: 42}})
	if got := receive(t, sub); got.Metric != "any.metric.at.all" || len(got.Points) != 1 || got.Points[0].Value != 42 {
		t.Errorf("got %+v", got)
	}
}

func TestSubscribeWithoutManager(t *testing.T) {
	// Nobody consumes "management" unless a manager runs; the exchanges may
	// exist from earlier tests, so the RPC must time out, or fail when they
	// don't.
	testenv.ExclusiveVhost(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	sub, err := Subscribe(ctx, testenv.URL(t), testenv.Token(t, "sink"), []string{"a.b"})
	if err == nil {
		sub.Close()
		t.Fatal("Subscribe succeeded without a manager")
	}
	if !errors.Is(err, context.DeadlineExceeded) && !regexp.MustCompile(`manager`).MatchString(err.Error()) {
		t.Errorf("error %q does not point at the missing manager", err)
	}
	// A manager started now answers the stale request (to a queue that is
	// gone); start one so that it does not linger for later tests.
	startManager(t, Config{})
}

func TestUnsubscribeSendsEnd(t *testing.T) {
	startManager(t, Config{})
	sink := newClient(t, testenv.Token(t, "sink"))
	metric, kept := "test.unsub.a", "test.unsub.b"
	reply := sink.callOK("sink.subscribe", map[string]any{"metrics": []any{metric, kept}, "metadata": false, "expires": 30})
	queue, _ := reply["dataQueue"].(string)
	if queue == "" {
		t.Fatalf("no dataQueue: %v", reply)
	}
	if !reflect.DeepEqual(reply["metrics"], []any{metric, kept}) {
		t.Errorf("metadata=false: metrics = %v, want the list", reply["metrics"])
	}
	// The queue's flags and x-expires are as requested: redeclaring with the
	// same ones works, with another x-expires it fails (406).
	if _, err := sink.ch.QueueDeclare(queue, false, true, false, false, amqp.Table{"x-expires": int64(30_000)}); err != nil {
		t.Fatalf("queue arguments differ from auto_delete, x-expires=30000: %v", err)
	}
	ch2, err := sink.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	_, err = ch2.QueueDeclare(queue, false, true, false, false, amqp.Table{"x-expires": int64(DefaultSinkQueueExpiry)})
	var amqpErr *amqp.Error
	if !errors.As(err, &amqpErr) || amqpErr.Code != amqp.PreconditionFailed {
		t.Errorf("redeclare with another x-expires: %v, want PRECONDITION_FAILED", err)
	}

	pub := newPublisher(t)
	reply = sink.callOK("sink.unsubscribe", map[string]any{"dataQueue": queue, "metrics": []any{metric}})
	if reply["dataQueue"] != queue {
		t.Errorf("unsubscribe reply: %v", reply)
	}
	pub.chunk(metric, []libmetricq.Point{{Time: 1, Value: 1}}) // unbound: dropped
	pub.chunk(kept, []libmetricq.Point{{Time: 2, Value: 2}})   // still bound

	get := func() (amqp.Delivery, bool) {
		t.Helper()
		d, ok, err := sink.ch.Get(queue, true)
		if err != nil {
			t.Fatalf("get: %v", err)
		}
		return d, ok
	}
	d, ok := get()
	if !ok || d.Type != "end" || len(d.Body) != 0 {
		t.Fatalf("first message: ok=%v type=%q body=%q, want the empty \"end\" message", ok, d.Type, d.Body)
	}
	d, ok = get()
	if !ok || d.RoutingKey != kept {
		t.Fatalf("second message: ok=%v key=%q, want data of %s (and none of %s)", ok, d.RoutingKey, kept, metric)
	}
	if _, ok := get(); ok {
		t.Error("more messages than expected")
	}

	// end=false: no end message.
	sink.callOK("unsubscribe", map[string]any{"dataQueue": queue, "metrics": []any{kept}, "end": false})
	if d, ok := get(); ok {
		t.Errorf("end=false still sent %q", d.Type)
	}
	sink.callOK("sink.release", map[string]any{"dataQueue": queue})
	sink.callErr("sink.unsubscribe", map[string]any{"dataQueue": queue + "-missing", "metrics": []any{kept}})

	// Reusing a queue by name.
	reply = sink.callOK("subscribe", map[string]any{"metrics": []any{kept}, "dataQueue": queue, "expires": 30})
	if reply["dataQueue"] != queue {
		t.Errorf("subscribe with dataQueue: %v", reply)
	}
	pub.chunk(kept, []libmetricq.Point{{Time: 3, Value: 3}})
	if d, ok := get(); !ok || d.RoutingKey != kept {
		t.Errorf("rebound metric not delivered: ok=%v", ok)
	}
}
