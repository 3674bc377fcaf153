// Package manager is a local stand-in for the MetricQ manager, for
// development and tests. It needs only RabbitMQ: client configurations come
// from a JSON file or from memory instead of CouchDB, and metric metadata is
// kept in memory (optionally persisted to a JSON file).
//
// It serves the RPCs a Source, a Sink and simple tools use, with the
// manager's reply shapes and metadata merge rules (metricq-manager 0.3.0):
// source/transformer/sink/history/db.register, source/transformer
// .declare_metrics, (sink.)subscribe, (sink.)unsubscribe, (sink.)release and
// (history.)get_metrics. It can also send RPCs itself: Call sends a direct
// RPC to one client (like the wizard's "config" push) and Broadcast collects
// the replies to a broadcast (like metricq-discover).
//
// The package also has a minimal Sink (Subscribe), which subscribes through
// the manager exactly like a MetricQ Sink and delivers decoded DataChunks.
package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
)

// Token is the manager's own token: the app_id of its requests and replies
// and the prefix of its RPC queue "manager-rpc".
const Token = "manager"

// Config configures Start.
type Config struct {
	// URL of the broker, with the vhost the clients use for management,
	// e.g. amqp://guest:guest@127.0.0.1:5672/.
	URL string
	// DataAddress is what register and subscribe replies give as
	// dataServerAddress. Empty means "vhost:<URL's vhost>", i.e. the same
	// broker and vhost. "vhost:<name>" selects another vhost on the same
	// broker; a full URL another broker (sent to clients without user and
	// password). The manager declares metricq.data and metricq.history and
	// the sinks' queues there.
	DataAddress string
	// ConfigFile is a JSON object mapping token to configuration object, read
	// once at start. Tokens that have no configuration get {} (see
	// RequireConfig).
	ConfigFile string
	// Configs are more configurations, token -> object, taking precedence
	// over ConfigFile.
	Configs map[string]map[string]any
	// RequireConfig makes register RPCs of tokens without a configuration
	// fail with the real manager's reply
	// {"error": "'Document <token> was not found'"}.
	RequireConfig bool
	// MetadataFile, when set, persists the metric metadata as a JSON object
	// metric -> metadata: loaded at start (a missing file is an empty
	// store), rewritten with the latest state after successful declares
	// (those that come during a write share the next one) and by Close.
	MetadataFile string
	// Logger receives the manager's log; nil means slog.Default().
	Logger *slog.Logger
}

// Manager is a running local MetricQ manager. Its methods are safe for
// concurrent use.
type Manager struct {
	url         string
	dataAddress string // as sent to clients
	requireCfg  bool
	metaFile    string
	log         *slog.Logger

	conn     *amqp.Connection // management connection "manager"
	dataConn *amqp.Connection // "manager data"
	mgmtCh   *amqp.Channel    // consumes "management", publishes replies
	rpcCh    *amqp.Channel    // consumes "manager-rpc", publishes our requests

	mu        sync.Mutex
	configs   map[string]map[string]any
	configRev map[string]int
	metadata  map[string]map[string]any
	metaRev   map[string]int
	metaDirty bool // the metadata changed since the file was last written

	// The metadata file's one writer (see metadataWriter): woken by
	// declares, ended by Close after a last write.
	metaWake chan struct{}
	metaStop chan struct{}
	metaDone chan struct{}

	calls *amqpkit.Calls // our requests to clients, answered on "manager-rpc"

	done      chan struct{}
	errMu     sync.Mutex
	err       error
	closing   atomic.Bool
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

// Start connects to the broker, declares the MetricQ exchanges and the
// "management" queue and starts serving RPCs. It fails when another manager
// already runs on the vhost (its exclusive "manager-rpc" queue is taken).
func Start(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.URL == "" {
		return nil, errors.New("manager: no broker URL")
	}
	reply, dataURL, err := dataServerAddresses(cfg.URL, cfg.DataAddress)
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	m := &Manager{
		url:         cfg.URL,
		dataAddress: reply,
		requireCfg:  cfg.RequireConfig,
		metaFile:    cfg.MetadataFile,
		log:         log,
		configs:     make(map[string]map[string]any),
		configRev:   make(map[string]int),
		metadata:    make(map[string]map[string]any),
		metaRev:     make(map[string]int),
		metaWake:    make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
	if cfg.ConfigFile != "" {
		if err := m.loadConfigFile(cfg.ConfigFile); err != nil {
			return nil, fmt.Errorf("manager: %w", err)
		}
	}
	for token, c := range cfg.Configs {
		m.configs[token] = deepCopy(c)
	}
	if cfg.MetadataFile != "" {
		if err := m.loadMetadataFile(cfg.MetadataFile); err != nil {
			return nil, fmt.Errorf("manager: %w", err)
		}
	}
	if err := m.connect(ctx, dataURL); err != nil {
		m.closeConnections()
		return nil, fmt.Errorf("manager: %w", err)
	}
	if m.metaFile != "" {
		m.startMetadataWriter()
	}
	log.Info("MetricQ manager running", "url", amqpkit.RedactURL(cfg.URL),
		"dataServerAddress", amqpkit.RedactURL(reply), "metrics", len(m.metadata), "configs", len(m.configs))
	return m, nil
}

func (m *Manager) connect(ctx context.Context, dataURL string) error {
	conn, err := Dial(ctx, m.url, Token)
	if err != nil {
		return err
	}
	m.conn = conn
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	m.mgmtCh = ch
	if err := ch.ExchangeDeclare(amqpkit.ManagementExchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", amqpkit.ManagementExchange, err)
	}
	if err := ch.ExchangeDeclare(amqpkit.BroadcastExchange, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", amqpkit.BroadcastExchange, err)
	}
	if _, err := ch.QueueDeclare(amqpkit.ManagementQueue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare queue %s: %w", amqpkit.ManagementQueue, err)
	}
	if err := ch.QueueBind(amqpkit.ManagementQueue, "#", amqpkit.ManagementExchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %s: %w", amqpkit.ManagementQueue, err)
	}

	rch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	m.rpcCh = rch
	m.calls = amqpkit.NewCalls(rch, Token, amqpkit.RPCQueue(Token))
	if _, err := rch.QueueDeclare(amqpkit.RPCQueue(Token), false, false, true, false, nil); err != nil {
		var amqpErr *amqp.Error
		if errors.As(err, &amqpErr) && amqpErr.Code == amqp.ResourceLocked {
			return fmt.Errorf("queue %s is held by another connection: is another MetricQ manager running on this vhost?", amqpkit.RPCQueue(Token))
		}
		return fmt.Errorf("declare queue %s: %w", amqpkit.RPCQueue(Token), err)
	}

	// The data side: exchanges (and later the sinks' queues) live on the
	// data vhost.
	dataConn, err := Dial(ctx, dataURL, Token+" data")
	if err != nil {
		return err
	}
	m.dataConn = dataConn
	dch, err := dataConn.Channel()
	if err != nil {
		return fmt.Errorf("open data channel: %w", err)
	}
	for _, name := range []string{amqpkit.DataExchange, amqpkit.HistoryExchange} {
		if err := dch.ExchangeDeclare(name, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %s: %w", name, err)
		}
	}
	_ = dch.Close()

	// Start consuming: our own replies first, so Call works as soon as Start
	// returns, then the management queue.
	returns := rch.NotifyReturn(make(chan amqp.Return, 16))
	replies, err := rch.Consume(amqpkit.RPCQueue(Token), "", false, true, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", amqpkit.RPCQueue(Token), err)
	}
	if err := ch.Qos(32, 0, false); err != nil {
		return fmt.Errorf("qos: %w", err)
	}
	requests, err := ch.Consume(amqpkit.ManagementQueue, "manager", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", amqpkit.ManagementQueue, err)
	}
	mgmtClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
	dataClosed := dataConn.NotifyClose(make(chan *amqp.Error, 1))

	m.wg.Add(4)
	go func() {
		defer m.wg.Done()
		for d := range requests {
			m.serve(d)
		}
	}()
	go func() {
		defer m.wg.Done()
		for d := range replies {
			_ = d.Ack(false)
			if !m.calls.Deliver(d) {
				m.log.Debug("dropping reply with unknown correlation id", "correlation_id", d.CorrelationId, "from", d.AppId)
			}
		}
	}()
	go func() {
		defer m.wg.Done()
		for r := range returns {
			m.calls.Return(r)
		}
	}()
	go func() {
		defer m.wg.Done()
		var amqpErr *amqp.Error
		var which string
		select {
		case amqpErr = <-mgmtClosed:
			which = "management"
		case amqpErr = <-dataClosed:
			which = "data"
		}
		if m.closing.Load() {
			m.fail(nil)
			return
		}
		err := fmt.Errorf("%s connection lost", which)
		if amqpErr != nil {
			err = fmt.Errorf("%s connection lost: %w", which, amqpErr)
		}
		m.log.Error("manager stopped", "error", err)
		m.fail(err)
		// Tear the other connection down too.
		go m.closeConnections()
	}()
	return nil
}

// fail records why the manager ended (nil after Close) and closes Done.
func (m *Manager) fail(err error) {
	m.errMu.Lock()
	defer m.errMu.Unlock()
	select {
	case <-m.done:
		return
	default:
	}
	m.err = err
	close(m.done)
	if m.calls != nil {
		m.calls.End(errors.New("manager stopped"))
	}
}

// Done is closed when the manager has stopped: after Close, or when a
// connection to the broker was lost (the manager does not reconnect).
func (m *Manager) Done() <-chan struct{} { return m.done }

// Err tells why Done was closed: nil after Close, the connection error
// otherwise.
func (m *Manager) Err() error {
	m.errMu.Lock()
	defer m.errMu.Unlock()
	return m.err
}

// DataServerAddress is the dataServerAddress the manager sends to clients.
func (m *Manager) DataServerAddress() string { return m.dataAddress }

// Close stops serving: it cancels the consumers (a request being handled is
// finished and acknowledged; unhandled ones stay in the durable
// "management" queue), deletes "manager-rpc" and closes both connections.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		m.closing.Store(true)
		if m.mgmtCh != nil {
			_ = m.mgmtCh.Cancel("manager", false)
		}
		if m.rpcCh != nil {
			// Deleting it now, rather than when the connection goes, lets a
			// new manager start on this vhost as soon as Close returns.
			_, _ = m.rpcCh.QueueDelete(amqpkit.RPCQueue(Token), false, false, false)
		}
		m.closeErr = m.closeConnections()
		m.wg.Wait()
		if m.metaDone != nil {
			close(m.metaStop)
			<-m.metaDone
		}
		m.fail(nil)
	})
	return m.closeErr
}

func (m *Manager) closeConnections() error {
	var errs []error
	for _, c := range []*amqp.Connection{m.conn, m.dataConn} {
		if c != nil && !c.IsClosed() {
			if err := c.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// serve handles one request from the "management" queue. Every message is
// acknowledged, whatever happens: an unreadable one is logged and dropped,
// never requeued.
func (m *Manager) serve(d amqp.Delivery) {
	defer func() { _ = d.Ack(false) }()
	result, function, err := m.handleSafely(d)
	if function == "" && err != nil {
		m.log.Warn("dropping unreadable RPC request", "error", err, "from", d.AppId,
			"routing_key", d.RoutingKey, "bytes", len(d.Body), "reply_to", d.ReplyTo)
	} else if err != nil {
		m.log.Warn("RPC failed", "function", function, "from", d.AppId, "error", err)
	}
	if d.ReplyTo == "" {
		if function != "" {
			m.log.Debug("not replying to RPC request without reply_to", "function", function, "from", d.AppId)
		}
		return
	}
	if err != nil {
		result = map[string]any{"error": err.Error()}
	} else if result == nil {
		result = map[string]any{}
	}
	m.reply(d, result)
}

func (m *Manager) handleSafely(d amqp.Delivery) (result any, function string, err error) {
	defer func() {
		if r := recover(); r != nil {
			m.log.Error("RPC handler panicked", "function", function, "panic", r)
			err = fmt.Errorf("internal error in the manager: %v", r)
		}
	}()
	if !json.Valid(d.Body) {
		return nil, "", errors.New("request body is not JSON")
	}
	var body map[string]any
	if err := json.Unmarshal(d.Body, &body); err != nil || body == nil {
		return nil, "", errors.New("request body is not a JSON object")
	}
	raw, ok := body["function"]
	if !ok {
		return nil, "", errors.New("'function'")
	}
	function, ok = raw.(string)
	if !ok || function == "" {
		return nil, "", fmt.Errorf("invalid RPC function name: %v", raw)
	}
	delete(body, "function")
	handler, ok := handlers[function]
	if !ok {
		return nil, function, fmt.Errorf("'Missing rpc handler for %s'", function)
	}
	result, err = handler(m, &request{function: function, token: d.AppId, args: body})
	return result, function, err
}

func (m *Manager) reply(request amqp.Delivery, result any) {
	if err := m.mgmtCh.Publish("", request.ReplyTo, false, false, amqpkit.ReplyMessage(request, Token, result)); err != nil {
		m.log.Warn("could not send RPC reply", "to", request.ReplyTo, "error", err)
	}
}

// SetConfig sets (or replaces) the configuration of token, as a new revision
// of its configuration document. It affects later register RPCs; push it to
// a running client with Call(ctx, token, "config", cfg).
func (m *Manager) SetConfig(token string, cfg map[string]any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.configs[token] = deepCopy(cfg)
	m.configRev[token]++
}

// Metadata returns a copy of the metadata store: metric -> metadata,
// including the manager's "date" and "source" keys, without "_id"/"_rev".
func (m *Manager) Metadata() map[string]map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]map[string]any, len(m.metadata))
	for k, v := range m.metadata {
		out[k] = deepCopy(v)
	}
	return out
}

func (m *Manager) loadConfigFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var configs map[string]map[string]any
	if err := json.Unmarshal(data, &configs); err != nil {
		return fmt.Errorf("config file %s: want a JSON object token -> config object: %w", path, err)
	}
	for token, c := range configs {
		if c == nil {
			c = map[string]any{}
		}
		m.configs[token] = c
	}
	return nil
}

// deepCopy copies a JSON-like value tree.
func deepCopy(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = deepCopyValue(v)
	}
	return out
}

func deepCopyValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return deepCopy(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = deepCopyValue(e)
		}
		return out
	default:
		return v
	}
}
