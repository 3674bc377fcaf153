package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
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
	dataQueue string
	metadata  map[string]any

	mgmt     *amqp.Connection
	endpoint *amqpkit.Endpoint // its RPC queue: sink.subscribe out, discover in
	data     *amqp.Connection
	chunks   chan Chunk
	stop     chan struct{}
	wg       sync.WaitGroup
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
	s := &Subscription{
		token:  token,
		url:    url,
		log:    log,
		chunks: make(chan Chunk, buffer),
		stop:   make(chan struct{}),
		endpoint: amqpkit.NewEndpoint(token, map[string]amqpkit.Handler{
			"discover": amqpkit.Discover(time.Now(), libmetricq.VersionString, ""),
		}, log),
	}
	if err := s.connect(ctx, metrics, opts); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Subscription) connect(ctx context.Context, metrics []string, opts SubscribeOptions) error {
	conn, err := Dial(ctx, s.url, "management connection "+s.token)
	if err != nil {
		return err
	}
	s.mgmt = conn
	if err := s.endpoint.Open(conn); err != nil {
		return err
	}

	args := map[string]any{"metrics": metrics, "metadata": true}
	if metrics == nil {
		args["metrics"] = []string{}
	}
	if opts.Expires > 0 {
		args["expires"] = int64(opts.Expires.Round(time.Second) / time.Second)
	}
	reply, err := s.endpoint.Call(ctx, "sink.subscribe", args)
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

	dataURL, err := amqpkit.DataURL(s.url, address)
	if err != nil {
		return fmt.Errorf("sink.subscribe: %w", err)
	}
	data, err := Dial(ctx, dataURL, "data connection "+s.token)
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
		s.endpoint.End(errors.New("subscription closed"))
		s.wg.Wait()
		s.endpoint.Wait()
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
