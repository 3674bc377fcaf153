package manager

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
)

// request is one decoded RPC request.
type request struct {
	function string
	token    string         // the caller: the request's app_id
	args     map[string]any // the body without "function"
}

type handler func(m *Manager, r *request) (any, error)

// handlers maps every function the manager serves, aliases included.
var handlers map[string]handler

func init() {
	handlers = map[string]handler{
		"source.register":             (*Manager).handleRegister,
		"transformer.register":        (*Manager).handleRegister,
		"sink.register":               (*Manager).handleRegister,
		"db.register":                 (*Manager).handleRegister,
		"history.register":            (*Manager).handleHistoryRegister,
		"source.declare_metrics":      (*Manager).handleDeclareMetrics,
		"transformer.declare_metrics": (*Manager).handleDeclareMetrics,
		"source.metrics_list":         (*Manager).handleDeclareMetrics,
		"transformer.metrics_list":    (*Manager).handleDeclareMetrics,
		"sink.subscribe":              (*Manager).handleSubscribe,
		"subscribe":                   (*Manager).handleSubscribe,
		"sink.unsubscribe":            (*Manager).handleUnsubscribe,
		"unsubscribe":                 (*Manager).handleUnsubscribe,
		"sink.release":                (*Manager).handleRelease,
		"release":                     (*Manager).handleRelease,
		"get_metrics":                 (*Manager).handleGetMetrics,
		"history.get_metrics":         (*Manager).handleGetMetrics,
	}
}

// Errors are worded as the real manager's (Python) replies where that is
// known: a missing argument is a KeyError, whose text keeps its quotes.
func missingArg(name string) error { return fmt.Errorf("'%s'", name) }

func requireToken(r *request) error {
	if r.token == "" {
		return fmt.Errorf("%s: request has no app_id (the caller's token)", r.function)
	}
	return nil
}

// config returns token's configuration document as the manager's CouchDB
// would: the stored object plus "_id" and "_rev".
func (m *Manager) config(token string) (map[string]any, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.configs[token]
	if !ok && m.requireCfg {
		return nil, false
	}
	doc := deepCopy(c)
	if doc == nil {
		doc = map[string]any{}
	}
	doc["_id"] = token
	if _, given := doc["_rev"]; !given {
		doc["_rev"] = fmt.Sprintf("%d-local", m.configRev[token]+1)
	}
	return doc, true
}

func notFound(token string) error {
	return fmt.Errorf("'Document %s was not found'", token)
}

func (m *Manager) handleRegister(r *request) (any, error) {
	if err := requireToken(r); err != nil {
		return nil, err
	}
	config, ok := m.config(r.token)
	if !ok {
		return nil, notFound(r.token)
	}
	reply := map[string]any{
		"dataServerAddress": m.dataAddress,
		"config":            config,
	}
	switch r.function {
	case "source.register", "transformer.register":
		reply["dataExchange"] = amqpkit.DataExchange
	case "db.register":
		reply["dataExchange"] = amqpkit.DataExchange
		reply["historyExchange"] = amqpkit.HistoryExchange
	}
	m.log.Info("client registered", "function", r.function, "token", r.token)
	return reply, nil
}

// handleHistoryRegister declares the history client's response queue
// "<token>-hrsp" as the manager does; its config is optional.
func (m *Manager) handleHistoryRegister(r *request) (any, error) {
	if err := requireToken(r); err != nil {
		return nil, err
	}
	queue := r.token + "-hrsp"
	err := m.withDataChannel(func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(queue, false, true, false, false, amqp.Table{"x-expires": int64(600_000)})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("declare history response queue %s: %w", queue, err)
	}
	reply := map[string]any{
		"historyServerAddress": m.dataAddress,
		"dataServerAddress":    m.dataAddress,
		"historyExchange":      amqpkit.HistoryExchange,
		"historyQueue":         queue,
	}
	if config, ok := m.config(r.token); ok {
		reply["config"] = config
	}
	m.log.Info("client registered", "function", r.function, "token", r.token)
	return reply, nil
}

func (m *Manager) handleDeclareMetrics(r *request) (any, error) {
	if err := requireToken(r); err != nil {
		return nil, err
	}
	if strings.HasSuffix(r.function, ".metrics_list") {
		m.log.Warn("client called deprecated "+r.function, "token", r.token)
	}
	raw := r.args["metrics"]
	if raw == nil {
		m.log.Warn("client called declare_metrics without metrics", "token", r.token)
		return nil, nil
	}
	declared, err := declaredMetrics(raw)
	if err != nil {
		return nil, err
	}
	if err := m.declare(r.token, declared); err != nil {
		return nil, err
	}
	return nil, nil
}

// declaredMetrics reads the "metrics" argument: an object name -> metadata
// object, or an array of names (each getting {}).
func declaredMetrics(raw any) (map[string]map[string]any, error) {
	out := make(map[string]map[string]any)
	switch v := raw.(type) {
	case []any:
		for _, e := range v {
			name, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("metric names must be strings, got %s", jsonType(e))
			}
			out[name] = map[string]any{}
		}
	case map[string]any:
		for name, md := range v {
			obj, ok := md.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("metadata of metric %q must be a JSON object, got %s", name, jsonType(md))
			}
			out[name] = obj
		}
	default:
		return nil, fmt.Errorf("\"metrics\" must be an object or an array, got %s", jsonType(raw))
	}
	return out, nil
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// stringList reads an array of strings.
func stringList(name string, raw any) ([]string, error) {
	list, ok := raw.([]any)
	if !ok {
		return nil, fmt.Errorf("%q must be an array of strings, got %s", name, jsonType(raw))
	}
	out := make([]string, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("%q must be an array of strings, item %d is %s", name, i, jsonType(e))
		}
		out[i] = s
	}
	return out, nil
}

// withDataChannel runs f on a fresh channel of the data connection, so that
// a channel error (a missing or mismatched queue) affects only this request.
func (m *Manager) withDataChannel(f func(ch *amqp.Channel) error) error {
	ch, err := m.dataConn.Channel()
	if err != nil {
		return fmt.Errorf("open data channel: %w", err)
	}
	err = f(ch)
	if cerr := ch.Close(); err == nil && cerr != nil && !errors.Is(cerr, amqp.ErrClosed) {
		err = cerr
	}
	return err
}

// DefaultSinkQueueExpiry is the x-expires of a sink's data queue when the
// subscribe request gives none, in milliseconds (as the manager).
const DefaultSinkQueueExpiry = 600_000

func (m *Manager) handleSubscribe(r *request) (any, error) {
	if err := requireToken(r); err != nil {
		return nil, err
	}
	raw, ok := r.args["metrics"]
	if !ok || raw == nil {
		return nil, missingArg("metrics")
	}
	metrics, err := stringList("metrics", raw)
	if err != nil {
		return nil, err
	}
	withMetadata := true
	switch v := r.args["metadata"].(type) {
	case nil:
		if _, given := r.args["metadata"]; given {
			withMetadata = false // Python: None is false
		}
	case bool:
		withMetadata = v
	default:
		return nil, fmt.Errorf("\"metadata\" must be a boolean, got %s", jsonType(v))
	}

	if !strings.HasPrefix(r.token, "sink-") {
		m.log.Warn(`sink token should start with "sink-"`, "token", r.token)
	}
	queue := r.token + "-" + randomHex() + "-data"
	if given, ok := r.args["dataQueue"]; ok && given != nil {
		name, ok := given.(string)
		if !ok {
			return nil, fmt.Errorf("\"dataQueue\" must be a string, got %s", jsonType(given))
		}
		if name != "" {
			if !strings.HasPrefix(name, r.token) || !strings.HasSuffix(name, "data") {
				m.log.Warn("invalid queue name for client: does not match <token>[-*]-data", "token", r.token, "queue", name)
			}
			queue = name
		}
	}
	expires := int64(DefaultSinkQueueExpiry)
	if e, given := r.args["expires"]; given && e != nil {
		if s, ok := e.(float64); ok && s > 0 && s*1000 < math.MaxInt64 {
			expires = int64(1000 * s)
		} else {
			m.log.Warn("invalid queue expiry requested: not a positive number of seconds", "token", r.token, "expires", e)
		}
	}
	args := amqp.Table{"x-expires": expires}
	cfg, _ := m.config(r.token)
	if ttl, ok := messageTTL(cfg); ok {
		args["x-message-ttl"] = ttl
	}

	err = m.withDataChannel(func(ch *amqp.Channel) error {
		if _, err := ch.QueueDeclare(queue, false, true, false, false, args); err != nil {
			return fmt.Errorf("declare data queue %s: %w", queue, err)
		}
		for _, metric := range metrics {
			if err := ch.QueueBind(queue, metric, amqpkit.DataExchange, false, nil); err != nil {
				return fmt.Errorf("bind %q to data queue %s: %w", metric, queue, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	m.log.Info("sink subscribed", "token", r.token, "queue", queue, "metrics", len(metrics))
	var replyMetrics any = metrics
	if withMetadata {
		replyMetrics = m.fetchMetadata(metrics)
	}
	return map[string]any{
		"dataServerAddress": m.dataAddress,
		"dataQueue":         queue,
		"metrics":           replyMetrics,
	}, nil
}

// messageTTL reads a sink's per-queue message TTL from its config, as the
// manager does: legacy "message_ttl" first, then x-metricq.data-message-ttl,
// in seconds.
func messageTTL(cfg map[string]any) (int64, bool) {
	v, ok := cfg["message_ttl"]
	if !ok {
		if x, isObj := cfg["x-metricq"].(map[string]any); isObj {
			v, ok = x["data-message-ttl"]
		}
	}
	if s, isNum := v.(float64); ok && isNum && s >= 0 && s*1000 < math.MaxInt64 {
		return int64(1000 * s), true
	}
	return 0, false
}

func (m *Manager) handleUnsubscribe(r *request) (any, error) {
	queue, ok := r.args["dataQueue"].(string)
	if !ok {
		return nil, missingArg("dataQueue")
	}
	raw, ok := r.args["metrics"]
	if !ok || raw == nil {
		return nil, missingArg("metrics")
	}
	metrics, err := stringList("metrics", raw)
	if err != nil {
		return nil, err
	}
	end := true
	if v, given := r.args["end"]; given {
		b, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("\"end\" must be a boolean, got %s", jsonType(v))
		}
		end = b
	}
	err = m.withDataChannel(func(ch *amqp.Channel) error {
		if _, err := ch.QueueDeclarePassive(queue, false, true, false, false, nil); err != nil {
			return fmt.Errorf("queue %s: %w", queue, err)
		}
		for _, metric := range metrics {
			if err := ch.QueueUnbind(queue, metric, amqpkit.DataExchange, nil); err != nil {
				return fmt.Errorf("unbind %q from %s: %w", metric, queue, err)
			}
		}
		if end {
			return ch.Publish("", queue, false, false, amqp.Publishing{Type: "end", Body: []byte{}})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("unsubscribe failed: %w", err)
	}
	m.log.Info("sink unsubscribed", "token", r.token, "queue", queue, "metrics", len(metrics), "end", end)
	return map[string]any{
		"dataServerAddress": m.dataAddress,
		"dataQueue":         queue,
		"metrics":           m.fetchMetadata(metrics),
	}, nil
}

// handleRelease does nothing: sink queues are auto-delete, as in the
// manager's default mode.
func (m *Manager) handleRelease(r *request) (any, error) {
	if _, ok := r.args["dataQueue"]; !ok {
		return nil, missingArg("dataQueue")
	}
	m.log.Debug("ignoring release: data queues are auto-delete", "token", r.token, "queue", r.args["dataQueue"])
	return nil, nil
}

// randomHex is a random (version 4) UUID in hex without dashes, like
// Python's uuid4().hex.
func randomHex() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return hex.EncodeToString(b[:])
}
