package manager

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/libmetricq"
)

// Chunk is one data message: the points of one metric.
type Chunk struct {
	Metric string // the routing key
	Points []libmetricq.Point
}

// SinkPrefetch is the data channel's QoS, as the reference Sink sets it.
const SinkPrefetch = 400

// SubscribeOptions tune SubscribeWith. The zero value is what Subscribe
// uses.
type SubscribeOptions struct {
	// Expires is how long the manager keeps the data queue once nobody
	// consumes it ("expires", whole seconds; 0 = the manager's default).
	Expires time.Duration
	// Logger receives warnings (undecodable messages); nil means
	// slog.Default().
	Logger *slog.Logger
	// Buffer is the capacity of the Chunks channel (default 64). Messages
	// are acknowledged only once handed over, so a slow reader holds back
	// at most Buffer+SinkPrefetch messages.
	Buffer int
}

// Subscription is a minimal MetricQ Sink: it subscribed through the manager
// and delivers every data message, decoded, on Chunks.
type Subscription struct {
	token     string
	url       string
	log       *slog.Logger
	started   time.Time
	dataQueue string
	metadata  map[string]any

	mgmt     *amqp.Connection
	mgmtCh   *amqp.Channel
	data     *amqp.Connection
	chunks   chan Chunk
	stop     chan struct{}
	wg       sync.WaitGroup
	pendMu   sync.Mutex
	pending  map[string]chan amqp.Delivery
	corrPre  string
	corrSeq  atomic.Uint64
	errMu    sync.Mutex
	err      error
	closing  atomic.Bool
	once     sync.Once
	closeErr error
}

// Subscribe subscribes to metrics the way a MetricQ Sink does, so a manager
// must serve the vhost: it opens the management connection, declares the
// exclusive queue "<token>-rpc" (bound to metricq.broadcast; discover is
// answered), sends sink.subscribe (app_id token, reply_to "<token>-rpc"),
// opens the data connection to the dataServerAddress of the reply and
// consumes the dataQueue (prefetch 400, manual acknowledgement). Metric
// names are AMQP topic binding keys: "#" subscribes to everything, "a.*" to
// one level below "a".
//
// Unless ctx has a deadline, setting up takes at most 60 s. ctx is only
// used for setting up; the subscription lives until Close.
func Subscribe(ctx context.Context, url, token string, metrics []string) (*Subscription, error) {
	return SubscribeWith(ctx, url, token, metrics, SubscribeOptions{})
}

// SubscribeWith is Subscribe with options.
func SubscribeWith(ctx context.Context, url, token string, metrics []string, opts SubscribeOptions) (*Subscription, error) {
	if token == "" {
		return nil, errors.New("subscribe: empty token")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultCallTimeout)
		defer cancel()
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	buffer := opts.Buffer
	if buffer <= 0 {
		buffer = 64
	}
	var random [6]byte
	_, _ = rand.Read(random[:])
	s := &Subscription{
		token:   token,
		url:     url,
		log:     log,
		started: time.Now(),
		chunks:  make(chan Chunk, buffer),
		stop:    make(chan struct{}),
		pending: make(map[string]chan amqp.Delivery),
		corrPre: "metricq-rpc-" + token + "-" + hex.EncodeToString(random[:]) + "-",
	}
	if err := s.connect(ctx, metrics, opts); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Subscription) connect(ctx context.Context, metrics []string, opts SubscribeOptions) error {
	conn, err := dial(ctx, s.url, "management connection "+s.token)
	if err != nil {
		return err
	}
	s.mgmt = conn
	for _, name := range []string{ManagementExchange, BroadcastExchange} {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("open channel: %w", err)
		}
		if err := ch.ExchangeDeclarePassive(name, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
			var amqpErr *amqp.Error
			if errors.As(err, &amqpErr) && amqpErr.Code == amqp.NotFound {
				return fmt.Errorf("exchange %s does not exist: is a MetricQ manager running on this vhost?", name)
			}
			return fmt.Errorf("check exchange %s: %w", name, err)
		}
		_ = ch.Close()
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	s.mgmtCh = ch
	queue := s.token + "-rpc"
	if _, err := ch.QueueDeclare(queue, false, false, true, false, nil); err != nil {
		var amqpErr *amqp.Error
		if errors.As(err, &amqpErr) && amqpErr.Code == amqp.ResourceLocked {
			return fmt.Errorf("queue %s is held by another connection: is a client with token %q running already?", queue, s.token)
		}
		return fmt.Errorf("declare queue %s: %w", queue, err)
	}
	if err := ch.QueueBind(queue, "#", BroadcastExchange, false, nil); err != nil {
		return fmt.Errorf("bind %s: %w", queue, err)
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 4))
	deliveries, err := ch.Consume(queue, "", false, true, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", queue, err)
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		for d := range deliveries {
			_ = d.Ack(false)
			s.dispatch(d)
		}
	}()
	go func() {
		defer s.wg.Done()
		for r := range returns {
			s.resolve(amqp.Delivery{Type: "returned", CorrelationId: r.CorrelationId})
		}
	}()

	args := map[string]any{"metrics": metrics, "metadata": true}
	if metrics == nil {
		args["metrics"] = []string{}
	}
	if opts.Expires > 0 {
		args["expires"] = int64(opts.Expires.Round(time.Second) / time.Second)
	}
	reply, err := s.rpc(ctx, "sink.subscribe", args)
	if err != nil {
		return err
	}
	var address string
	if err := json.Unmarshal(reply["dataServerAddress"], &address); err != nil || address == "" {
		return errors.New("sink.subscribe: reply has no dataServerAddress")
	}
	if err := json.Unmarshal(reply["dataQueue"], &s.dataQueue); err != nil || s.dataQueue == "" {
		return errors.New("sink.subscribe: reply has no dataQueue")
	}
	_ = json.Unmarshal(reply["metrics"], &s.metadata)

	dataURL, err := libmetricq.DataURL(s.url, address)
	if err != nil {
		return fmt.Errorf("sink.subscribe: %w", err)
	}
	data, err := dial(ctx, dataURL, "data connection "+s.token)
	if err != nil {
		return err
	}
	s.data = data
	dch, err := data.Channel()
	if err != nil {
		return fmt.Errorf("open data channel: %w", err)
	}
	if err := dch.Qos(SinkPrefetch, 0, false); err != nil {
		return fmt.Errorf("data channel qos: %w", err)
	}
	if _, err := dch.QueueDeclarePassive(s.dataQueue, false, true, false, false, nil); err != nil {
		return fmt.Errorf("data queue %s: %w", s.dataQueue, err)
	}
	messages, err := dch.Consume(s.dataQueue, "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", s.dataQueue, err)
	}
	closed := data.NotifyClose(make(chan *amqp.Error, 1))
	mgmtClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(s.chunks)
		s.consume(messages)
		var amqpErr *amqp.Error
		select {
		case amqpErr = <-closed:
		case amqpErr = <-mgmtClosed:
		default:
		}
		if !s.closing.Load() {
			err := errors.New("data consumer ended")
			if amqpErr != nil {
				err = fmt.Errorf("connection lost: %w", amqpErr)
			}
			s.setErr(err)
		}
	}()
	return nil
}

func (s *Subscription) consume(messages <-chan amqp.Delivery) {
	for {
		var d amqp.Delivery
		var ok bool
		select {
		case d, ok = <-messages:
			if !ok {
				return
			}
		case <-s.stop:
			return
		}
		if d.Type == "end" {
			s.log.Debug("end of subscription message", "queue", s.dataQueue)
			_ = d.Ack(false)
			continue
		}
		points, err := libmetricq.DecodeDataChunk(d.Body)
		if err != nil {
			s.log.Warn("dropping undecodable data message", "metric", d.RoutingKey, "bytes", len(d.Body), "error", err)
			_ = d.Ack(false)
			continue
		}
		select {
		case s.chunks <- Chunk{Metric: d.RoutingKey, Points: points}:
			_ = d.Ack(false)
		case <-s.stop:
			return
		}
	}
}

func (s *Subscription) setErr(err error) {
	s.errMu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.errMu.Unlock()
}

// Chunks delivers the data messages in arrival order. It is closed by Close
// or when a connection is lost (then Err says why).
func (s *Subscription) Chunks() <-chan Chunk { return s.chunks }

// Err is why Chunks was closed other than by Close, or nil.
func (s *Subscription) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// Token is the sink's token.
func (s *Subscription) Token() string { return s.token }

// DataQueue is the queue the manager created for this subscription.
func (s *Subscription) DataQueue() string { return s.dataQueue }

// Metadata is the "metrics" of the subscribe reply: metric -> metadata
// document (null for metrics nobody declared).
func (s *Subscription) Metadata() map[string]any { return s.metadata }

// Close ends the subscription: it closes both connections (the broker then
// deletes the auto-delete data queue and "<token>-rpc") and closes Chunks.
func (s *Subscription) Close() error {
	s.once.Do(func() {
		s.closing.Store(true)
		close(s.stop)
		var errs []error
		for _, c := range []*amqp.Connection{s.data, s.mgmt} {
			if c != nil && !c.IsClosed() {
				if err := c.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
					errs = append(errs, err)
				}
			}
		}
		s.wg.Wait()
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

func (s *Subscription) resolve(d amqp.Delivery) bool {
	s.pendMu.Lock()
	c, ok := s.pending[d.CorrelationId]
	delete(s.pending, d.CorrelationId)
	s.pendMu.Unlock()
	if ok {
		c <- d
	}
	return ok
}

// rpc sends a management RPC and waits for its reply.
func (s *Subscription) rpc(ctx context.Context, function string, args map[string]any) (map[string]json.RawMessage, error) {
	body, err := requestBody(function, args)
	if err != nil {
		return nil, fmt.Errorf("rpc %s: %w", function, err)
	}
	id := s.corrPre + strconv.FormatUint(s.corrSeq.Add(1), 10)
	got := make(chan amqp.Delivery, 1)
	s.pendMu.Lock()
	s.pending[id] = got
	s.pendMu.Unlock()
	defer func() {
		s.pendMu.Lock()
		delete(s.pending, id)
		s.pendMu.Unlock()
	}()
	err = s.mgmtCh.PublishWithContext(ctx, ManagementExchange, function, true, false, amqp.Publishing{
		ContentType:   "application/json",
		CorrelationId: id,
		ReplyTo:       s.token + "-rpc",
		AppId:         s.token,
		DeliveryMode:  amqp.Transient,
		Body:          body,
	})
	if err != nil {
		return nil, fmt.Errorf("rpc %s: publish: %w", function, err)
	}
	select {
	case d := <-got:
		if d.Type == "returned" {
			return nil, fmt.Errorf("rpc %s: unroutable: no MetricQ manager is consuming %s", function, ManagementExchange)
		}
		var reply map[string]json.RawMessage
		if err := json.Unmarshal(d.Body, &reply); err != nil || reply == nil {
			return nil, fmt.Errorf("rpc %s: reply is not a JSON object", function)
		}
		if raw, ok := reply["error"]; ok {
			var text string
			if json.Unmarshal(raw, &text) != nil {
				text = string(raw)
			}
			return nil, fmt.Errorf("rpc %s: manager replied with an error: %s", function, text)
		}
		return reply, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("rpc %s: no reply from the manager: %w", function, ctx.Err())
	}
}

// dispatch handles a message on "<token>-rpc": a reply to one of our calls,
// or a request (discover is answered; anything else gets the reference's
// error reply).
func (s *Subscription) dispatch(d amqp.Delivery) {
	if d.CorrelationId != "" && s.resolve(d) {
		return
	}
	var body map[string]any
	if err := json.Unmarshal(d.Body, &body); err != nil || body == nil {
		s.log.Warn("dropping unreadable message on the RPC queue", "bytes", len(d.Body), "from", d.AppId)
		return
	}
	function, ok := body["function"].(string)
	if !ok || d.ReplyTo == "" {
		return
	}
	var result any
	switch function {
	case "discover":
		now := time.Now()
		host, _ := os.Hostname()
		result = map[string]any{
			"alive":          true,
			"currentTime":    isoFormat(now),
			"startingTime":   isoFormat(s.started),
			"uptime":         now.Sub(s.started).Nanoseconds(),
			"metricqVersion": libmetricq.VersionString,
			"hostname":       host,
		}
	default:
		result = map[string]any{"error": fmt.Sprintf("'Missing rpc handler for %s'", function)}
	}
	reply, _ := json.Marshal(result)
	err := s.mgmtCh.Publish("", d.ReplyTo, false, false, amqp.Publishing{
		ContentType:   "application/json",
		CorrelationId: d.CorrelationId,
		AppId:         s.token,
		DeliveryMode:  amqp.Transient,
		Body:          reply,
	})
	if err != nil {
		s.log.Debug("could not send RPC reply", "to", d.ReplyTo, "error", err)
	}
}
