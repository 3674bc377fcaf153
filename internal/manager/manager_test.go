package manager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// waitTimeout bounds every wait for a reply or message in these tests.
const waitTimeout = 10 * time.Second

// logBuffer collects a manager's log for assertions (and for the test log
// when a test fails).
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// startManager starts a manager on the test vhost, closed when the test ends.
func startManager(t *testing.T, cfg Config) (*Manager, *logBuffer) {
	t.Helper()
	testenv.ExclusiveVhost(t)
	cfg.URL = testenv.URL(t)
	log, buf := testLogger(t)
	cfg.Logger = log
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	m, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m, buf
}

// client is a bare MetricQ client built on amqp091-go: an exclusive
// "<token>-rpc" queue and RPCs to metricq.management.
type client struct {
	t       *testing.T
	token   string
	conn    *amqp.Connection
	ch      *amqp.Channel
	replies <-chan amqp.Delivery
	seq     atomic.Uint64
}

func newClient(t *testing.T, token string) *client {
	t.Helper()
	conn, err := amqp.Dial(testenv.URL(t))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	if _, err := ch.QueueDeclare(token+"-rpc", false, false, true, false, nil); err != nil {
		t.Fatalf("declare rpc queue: %v", err)
	}
	replies, err := ch.Consume(token+"-rpc", "", true, true, false, false, nil)
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	return &client{t: t, token: token, conn: conn, ch: ch, replies: replies}
}

// send publishes a raw request to metricq.management and returns its
// correlation id.
func (c *client) send(routingKey string, body []byte, withReplyTo bool) string {
	c.t.Helper()
	id := fmt.Sprintf("test-%s-%d", c.token, c.seq.Add(1))
	p := amqp.Publishing{ContentType: "application/json", CorrelationId: id, AppId: c.token, Body: body}
	if withReplyTo {
		p.ReplyTo = c.token + "-rpc"
	}
	if err := c.ch.Publish(amqpkit.ManagementExchange, routingKey, false, false, p); err != nil {
		c.t.Fatalf("publish: %v", err)
	}
	return id
}

// wait returns the reply with correlation id id.
func (c *client) wait(id string) amqp.Delivery {
	c.t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case d, ok := <-c.replies:
			if !ok {
				c.t.Fatalf("reply queue closed while waiting for %s", id)
			}
			if d.CorrelationId == id {
				return d
			}
		case <-timeout:
			c.t.Fatalf("no reply to %s within %v", id, waitTimeout)
		}
	}
}

// call makes an RPC and returns the decoded reply body.
func (c *client) call(function string, args map[string]any) map[string]any {
	c.t.Helper()
	request := map[string]any{"function": function}
	maps.Copy(request, args)
	body, err := json.Marshal(request)
	if err != nil {
		c.t.Fatal(err)
	}
	d := c.wait(c.send(function, body, true))
	var reply map[string]any
	if err := json.Unmarshal(d.Body, &reply); err != nil {
		c.t.Fatalf("%s: reply %q is not a JSON object: %v", function, d.Body, err)
	}
	return reply
}

// callOK is call, failing on an error reply.
func (c *client) callOK(function string, args map[string]any) map[string]any {
	c.t.Helper()
	reply := c.call(function, args)
	if e, ok := reply["error"]; ok {
		c.t.Fatalf("%s: error reply: %v", function, e)
	}
	return reply
}

// callErr is call, failing unless the reply is an error; it returns the text.
func (c *client) callErr(function string, args map[string]any) string {
	c.t.Helper()
	reply := c.call(function, args)
	e, ok := reply["error"].(string)
	if !ok {
		c.t.Fatalf("%s: want an error reply, got %v", function, reply)
	}
	return e
}

func testVhost(t *testing.T) string {
	u, err := amqp.ParseURI(testenv.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	return u.Vhost
}

var isoDate = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$`)

func TestDeclareMergeRules(t *testing.T) {
	m, logs := startManager(t, Config{})
	a := newClient(t, testenv.Token(t, "source-a"))
	b := newClient(t, testenv.Token(t, "source-b"))
	metric := "test.merge." + strings.ToLower(a.token[len(a.token)-8:])

	before := time.Now().Add(-time.Second)
	reply := a.callOK("source.declare_metrics", map[string]any{"metrics": map[string]any{
		metric: map[string]any{"unit": "W", "rate": 2.5, "source": "someone-else", "historic": true, "_rev": "9-x", "_private": 1},
	}})
	if len(reply) != 0 {
		t.Errorf("declare reply = %v, want {}", reply)
	}
	md := m.Metadata()[metric]
	if md == nil {
		t.Fatalf("metric %s not stored; have %v", metric, m.Metadata())
	}
	if md["unit"] != "W" || md["rate"] != 2.5 {
		t.Errorf("declared keys not stored: %v", md)
	}
	if md["source"] != a.token {
		t.Errorf("source = %v, want the caller's token %s", md["source"], a.token)
	}
	for _, dropped := range []string{"historic", "_rev", "_private"} {
		if _, ok := md[dropped]; ok {
			t.Errorf("key %q should have been dropped: %v", dropped, md)
		}
	}
	date, _ := md["date"].(string)
	if !isoDate.MatchString(date) {
		t.Fatalf("date = %q, want Python's UTC isoformat", date)
	}
	if when, err := time.Parse(time.RFC3339Nano, date); err != nil || when.Before(before) || when.After(time.Now().Add(time.Second)) {
		t.Errorf("date %q is not now (%v)", date, err)
	}
	if !strings.Contains(logs.String(), "ignoring reserved metadata field") {
		t.Error("dropping source/historic was not logged")
	}

	// Another source re-declares: keys merge, old ones stay, the given date
	// is kept, and the source changes (logged).
	b.callOK("source.declare_metrics", map[string]any{"metrics": map[string]any{
		metric: map[string]any{"description": "merged", "date": "2020-01-02T03:04:05+00:00"},
	}})
	md = m.Metadata()[metric]
	want := map[string]any{"unit": "W", "rate": 2.5, "description": "merged", "date": "2020-01-02T03:04:05+00:00", "source": b.token}
	if !reflect.DeepEqual(md, want) {
		t.Errorf("after merge: %v, want %v", md, want)
	}
	if !strings.Contains(logs.String(), "changing source for metric") {
		t.Error("the source change was not logged")
	}

	// The list form, and the deprecated alias.
	listed := []any{metric + ".l1", metric + ".l2"}
	a.callOK("source.declare_metrics", map[string]any{"metrics": listed})
	a.callOK("source.metrics_list", map[string]any{"metrics": []any{metric + ".l3"}})
	a.callOK("transformer.declare_metrics", map[string]any{"metrics": []any{metric + ".l4"}})
	all := m.Metadata()
	for _, name := range []string{metric + ".l1", metric + ".l2", metric + ".l3", metric + ".l4"} {
		md := all[name]
		if md == nil || md["source"] != a.token || !isoDate.MatchString(fmt.Sprint(md["date"])) || len(md) != 2 {
			t.Errorf("%s = %v, want just date and source %s", name, md, a.token)
		}
	}

	// Missing metrics: a warning and {}.
	if reply := a.callOK("source.declare_metrics", nil); len(reply) != 0 {
		t.Errorf("declare without metrics: %v, want {}", reply)
	}

	// Metadata that is not an object fails the request, and nothing of it
	// is stored.
	e := a.callErr("source.declare_metrics", map[string]any{"metrics": map[string]any{
		metric + ".ok": map[string]any{}, metric + ".bad": "W",
	}})
	if !strings.Contains(e, metric+".bad") {
		t.Errorf("error %q does not name the metric", e)
	}
	all = m.Metadata()
	if _, ok := all[metric+".ok"]; ok {
		t.Error("a failed declare stored part of its metrics")
	}
	if _, ok := all[metric+".bad"]; ok {
		t.Error("metadata that is not an object was stored")
	}
	a.callErr("source.declare_metrics", map[string]any{"metrics": "just-a-string"})
	a.callErr("source.declare_metrics", map[string]any{"metrics": []any{1, 2}})
	if e := a.callErr("source.declare_metrics", map[string]any{"metrics": []any{"_design"}}); e != "metadata update failed" {
		t.Errorf("reserved document id: error %q, want the manager's \"metadata update failed\"", e)
	}
}

func TestMetadataFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "metadata.json")
	if err := os.WriteFile(file, []byte(`{"old.metric": {"unit": "V", "historic": true}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	m, _ := startManager(t, Config{MetadataFile: file})
	if got := m.Metadata()["old.metric"]; got["unit"] != "V" {
		t.Fatalf("metadata file not loaded: %v", m.Metadata())
	}
	c := newClient(t, testenv.Token(t, "source"))
	c.callOK("source.declare_metrics", map[string]any{"metrics": map[string]any{"new.metric": map[string]any{"unit": "A"}}})
	if err := m.Close(); err != nil { // the file's last write is Close's
		t.Fatalf("Close: %v", err)
	}

	stored := readMetadataFile(t, file)
	if stored["new.metric"]["unit"] != "A" || stored["new.metric"]["source"] != c.token || stored["old.metric"]["unit"] != "V" {
		t.Errorf("metadata file after declare: %v", stored)
	}
}

// Declares of one metric each, one after the other, share the file's
// writes; after Close the file holds every metric, in its latest state.
func TestMetadataFileAfterManyDeclares(t *testing.T) {
	file := filepath.Join(t.TempDir(), "metadata.json")
	m, _ := startManager(t, Config{MetadataFile: file})
	c := newClient(t, testenv.Token(t, "source"))
	const n = 300
	for i := range n {
		c.callOK("source.declare_metrics", map[string]any{"metrics": map[string]any{
			fmt.Sprintf("many.m%03d", i): map[string]any{"unit": "W", "rate": float64(i)},
		}})
	}
	c.callOK("source.declare_metrics", map[string]any{"metrics": map[string]any{"many.m000": map[string]any{"unit": "kW"}}})
	stored := metadataAfterClose(t, m, file, n)
	for i := 1; i < n; i++ {
		md := stored[fmt.Sprintf("many.m%03d", i)]
		if md["unit"] != "W" || md["rate"] != float64(i) || md["source"] != c.token {
			t.Fatalf("many.m%03d in the file: %v", i, md)
		}
	}
	if got := stored["many.m000"]["unit"]; got != "kW" {
		t.Errorf("many.m000's unit in the file: %v, want the latest declare's kW", got)
	}
}

func TestRegister(t *testing.T) {
	src := testenv.Token(t, "source")
	m, _ := startManager(t, Config{Configs: map[string]map[string]any{
		src: {"rate": 5.0, "nested": map[string]any{"a": []any{1.0, "x"}}},
	}})
	c := newClient(t, src)
	wantAddress := amqpkit.VhostAddress(testVhost(t))
	if m.DataServerAddress() != wantAddress {
		t.Errorf("DataServerAddress = %q, want %q", m.DataServerAddress(), wantAddress)
	}

	reply := c.callOK("source.register", nil)
	want := map[string]any{
		"dataServerAddress": wantAddress,
		"dataExchange":      "metricq.data",
		"config":            map[string]any{"_id": src, "_rev": "1-local", "rate": 5.0, "nested": map[string]any{"a": []any{1.0, "x"}}},
	}
	if !reflect.DeepEqual(reply, want) {
		t.Errorf("source.register reply:\n got %v\nwant %v", reply, want)
	}

	// SetConfig makes a new revision; a token without config gets {}.
	m.SetConfig(src, map[string]any{"rate": 7.0})
	reply = c.callOK("transformer.register", nil)
	if cfg := reply["config"]; !reflect.DeepEqual(cfg, map[string]any{"_id": src, "_rev": "2-local", "rate": 7.0}) {
		t.Errorf("config after SetConfig: %v", cfg)
	}
	other := newClient(t, testenv.Token(t, "source-nocfg"))
	reply = other.callOK("source.register", nil)
	if cfg := reply["config"]; !reflect.DeepEqual(cfg, map[string]any{"_id": other.token, "_rev": "1-local"}) {
		t.Errorf("config of an unknown token: %v", cfg)
	}

	// Other roles.
	reply = other.callOK("sink.register", nil)
	if _, ok := reply["dataExchange"]; ok || reply["dataServerAddress"] != wantAddress || reply["config"] == nil {
		t.Errorf("sink.register reply: %v", reply)
	}
	reply = other.callOK("db.register", nil)
	if reply["historyExchange"] != "metricq.history" || reply["dataExchange"] != "metricq.data" {
		t.Errorf("db.register reply: %v", reply)
	}
	reply = other.callOK("history.register", nil)
	if reply["historyExchange"] != "metricq.history" || reply["historyQueue"] != other.token+"-hrsp" {
		t.Errorf("history.register reply: %v", reply)
	}
	if _, err := other.ch.QueueDeclarePassive(other.token+"-hrsp", false, true, false, false, nil); err != nil {
		t.Errorf("history response queue missing: %v", err)
	}
}

func TestRegisterRequireConfig(t *testing.T) {
	known := testenv.Token(t, "source-known")
	file := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(`{%q: {"prefix": "localhost"}}`, known)), 0o600); err != nil {
		t.Fatal(err)
	}
	startManager(t, Config{ConfigFile: file, RequireConfig: true})

	reply := newClient(t, known).callOK("source.register", nil)
	if cfg, _ := reply["config"].(map[string]any); cfg["prefix"] != "localhost" || cfg["_id"] != known {
		t.Errorf("config from file: %v", reply["config"])
	}
	unknown := newClient(t, testenv.Token(t, "source-unknown"))
	for _, f := range []string{"source.register", "sink.register"} {
		if e, want := unknown.callErr(f, nil), "'Document "+unknown.token+" was not found'"; e != want {
			t.Errorf("%s of an unknown token: error %q, want %q", f, e, want)
		}
	}
	// history.register does not need a config.
	if reply := unknown.callOK("history.register", nil); reply["config"] != nil {
		t.Errorf("history.register without config: %v", reply)
	}
}

func TestUnknownFunction(t *testing.T) {
	startManager(t, Config{})
	c := newClient(t, testenv.Token(t, "source"))
	id := c.send("frobnicate", []byte(`{"function": "frobnicate"}`), true)
	d := c.wait(id)
	if string(d.Body) != `{"error":"'Missing rpc handler for frobnicate'"}` {
		t.Errorf("reply body %s", d.Body)
	}
	if d.AppId != "manager" || d.ContentType != "application/json" || d.CorrelationId != id {
		t.Errorf("reply properties: app_id %q, content_type %q, correlation_id %q", d.AppId, d.ContentType, d.CorrelationId)
	}
}

func TestMalformedRequestsAreDropped(t *testing.T) {
	m, logs := startManager(t, Config{})
	c := newClient(t, testenv.Token(t, "source"))

	// Without reply_to: nothing to answer; they must just go away.
	for _, body := range []string{"\x00\xffgarbage", `{"function": "source.register"`, `[]`} {
		c.send("garbage", []byte(body), false)
	}
	// With reply_to: an error reply each.
	for _, body := range []string{"not json", "[1, 2]", "null", `"text"`, `{"no": "function"}`, `{"function": 5}`,
		`{"function": "source.declare_metrics", "metrics": 7}`,
		`{"function": "sink.subscribe", "metrics": "a.b"}`,
		`{"function": "sink.subscribe", "metrics": ["a.b"], "metadata": "yes"}`,
		`{"function": "sink.unsubscribe", "metrics": ["a.b"]}`,
		`{"function": "get_metrics", "format": 3}`,
		`{"function": "get_metrics", "selector": {"a": 1}}`,
		`{"function": "get_metrics", "selector": "(unclosed"}`,
		`{"function": "get_metrics", "limit": -1}`,
	} {
		d := c.wait(c.send("garbage", []byte(body), true))
		var reply map[string]any
		if err := json.Unmarshal(d.Body, &reply); err != nil || reply["error"] == nil {
			t.Errorf("request %s: want an error reply, got %s", body, d.Body)
		}
	}
	// The manager still works.
	if reply := c.callOK("get_metrics", nil); reply["metrics"] == nil {
		t.Errorf("get_metrics after garbage: %v", reply)
	}

	// Every message was acknowledged: once the manager's connection is gone,
	// an unacknowledged one would be back in the queue.
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	q, err := c.ch.QueueDeclarePassive(amqpkit.ManagementQueue, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("passive declare: %v", err)
	}
	if q.Messages != 0 {
		t.Errorf("management queue holds %d messages after the manager stopped", q.Messages)
	}
	log := logs.String()
	if !strings.Contains(log, "dropping unreadable RPC request") {
		t.Error("unreadable requests were not logged")
	}
	if strings.Contains(log, ":guest@") {
		t.Error("the log contains the broker password")
	}
}

func TestSecondManagerRefused(t *testing.T) {
	startManager(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	log, _ := testLogger(t)
	m2, err := Start(ctx, Config{URL: testenv.URL(t), Logger: log})
	if err == nil {
		m2.Close()
		t.Fatal("a second manager started on the same vhost")
	}
	if !strings.Contains(err.Error(), "another MetricQ manager") {
		t.Errorf("error %q does not explain the conflict", err)
	}
}

func TestGetMetrics(t *testing.T) {
	file := filepath.Join(t.TempDir(), "metadata.json")
	if err := os.WriteFile(file, []byte(`{"gm.hist.one": {"historic": true}, "gm.hist.two": {"historic": true, "hidden": true}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	startManager(t, Config{MetadataFile: file})
	c := newClient(t, testenv.Token(t, "source"))
	c.callOK("source.declare_metrics", map[string]any{"metrics": map[string]any{
		"gm.b.power": map[string]any{"unit": "W"},
		"gm.a.power": map[string]any{"unit": "W"},
		"gm.a.temp":  map[string]any{"unit": "C"},
		"other.x":    map[string]any{},
	}})
	names := func(args map[string]any) []string {
		t.Helper()
		reply := c.callOK("get_metrics", args)
		list, ok := reply["metrics"].([]any)
		if !ok {
			t.Fatalf("get_metrics %v: want {\"metrics\": [...]}, got %v", args, reply)
		}
		out := make([]string, len(list))
		for i, n := range list {
			out[i] = n.(string)
		}
		return out
	}
	check := func(args map[string]any, want ...string) {
		t.Helper()
		if got := names(args); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("get_metrics %v = %v, want %v", args, got, want)
		}
	}
	check(map[string]any{"prefix": "gm."}, "gm.a.power", "gm.a.temp", "gm.b.power", "gm.hist.one", "gm.hist.two")
	check(map[string]any{"selector": `^gm\..*\.power$`}, "gm.a.power", "gm.b.power")
	check(map[string]any{"selector": `power`, "limit": 1.0}, "gm.a.power")
	check(map[string]any{"selector": []any{"gm.a.temp", "other.x", "nope"}}, "gm.a.temp", "other.x")
	check(map[string]any{"prefix": "gm.", "historic": true}, "gm.hist.one", "gm.hist.two")
	check(map[string]any{"prefix": "gm.", "historic": true, "hidden": false}, "gm.hist.one")
	check(map[string]any{"selector": "^gm", "historic": true, "hidden": true}, "gm.hist.two")
	check(map[string]any{"infix": "power", "historic": true})
	check(map[string]any{"infix": "a.temp"}, "gm.a.temp")
	check(map[string]any{"historic": true, "limit": 0.0})

	reply := c.callOK("history.get_metrics", map[string]any{"format": "object", "selector": "^gm\\.a\\."})
	docs, ok := reply["metrics"].(map[string]any)
	if !ok || len(docs) != 2 {
		t.Fatalf("format object: %v", reply)
	}
	power, _ := docs["gm.a.power"].(map[string]any)
	if power["unit"] != "W" || power["source"] != c.token || power["_id"] != "gm.a.power" || power["date"] == nil {
		t.Errorf("metadata document: %v", power)
	}

	for _, bad := range []map[string]any{
		{"format": "csv"},
		{"prefix": "a", "infix": "b"},
		{"selector": "a", "prefix": "b"},
		{"selector": []any{}},
		{"historic": "yes"},
		{"limit": 1.5},
	} {
		c.callErr("get_metrics", bad)
	}
}

func TestDataServerAddresses(t *testing.T) {
	for _, tc := range []struct{ mgmt, data, reply, connect string }{
		{"amqp://u:p@h:5672/", "", "vhost:/", "amqp://u:p@h/"},
		{"amqp://u:p@h/test-vh", "", "vhost:test-vh", "amqp://u:p@h/test-vh"},
		{"amqp://u:p@h/%2Fodd", "", "vhost:%2Fodd", "amqp://u:p@h/%2Fodd"},
		{"amqp://u:p@h/", "vhost:/data", "vhost:/data", "amqp://u:p@h/data"},
		{"amqp://u:p@h/", "amqp://other:5673/d", "amqp://other:5673/d", "amqp://u:p@other:5673/d"},
		{"amqp://u:p@h/", "amqp://x:y@other/d", "amqp://other/d", "amqp://x:y@other/d"},
	} {
		reply, connect, err := dataServerAddresses(tc.mgmt, tc.data)
		got, _ := amqp.ParseURI(connect)
		want, _ := amqp.ParseURI(tc.connect)
		if err != nil || reply != tc.reply || got.String() != want.String() {
			t.Errorf("dataServerAddresses(%q, %q) = %q, %q, %v; want %q, %q", tc.mgmt, tc.data, reply, connect, err, tc.reply, tc.connect)
		}
		// A client deriving the data URL from the reply reaches the same vhost.
		if derived, err := libmetricq.DataURL(tc.mgmt, reply); err != nil {
			t.Errorf("libmetricq.DataURL(%q): %v", reply, err)
		} else {
			du, _ := amqp.ParseURI(derived)
			cu, _ := amqp.ParseURI(tc.connect)
			if du.Host != cu.Host || du.Port != cu.Port || du.Vhost != cu.Vhost {
				t.Errorf("client derives %q from %q, manager connects to %q", derived, reply, tc.connect)
			}
		}
	}
	if _, err := libmetricq.DataURL("amqp://h/", ""); err == nil {
		t.Error("empty dataServerAddress accepted")
	}
}

func TestCallAndBroadcast(t *testing.T) {
	m, _ := startManager(t, Config{})
	token := testenv.Token(t, "sink")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sub, err := Subscribe(ctx, testenv.URL(t), token, []string{"cb.none"})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	defer sub.Close()

	reply, err := m.Call(ctx, token, "discover", nil)
	if err != nil || reply["alive"] != true {
		t.Errorf("Call discover: %v, %v", reply, err)
	}
	_, err = m.Call(ctx, token, "config", map[string]any{"rate": 1})
	var callErr *CallError
	if !errors.As(err, &callErr) || callErr.Message != "'Missing rpc handler for config'" {
		t.Errorf("Call of an unhandled function: %v", err)
	}
	if _, err := m.Call(ctx, token+"-absent", "discover", nil); !errors.Is(err, ErrNoClient) {
		t.Errorf("Call to a missing client: %v, want ErrNoClient", err)
	}

	replies, err := m.Broadcast(ctx, "discover", nil, 500*time.Millisecond)
	if err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
	found := false
	for _, r := range replies {
		if r.AppID == token {
			found = true
			if r.Body["alive"] != true || r.Body["metricqVersion"] == nil {
				t.Errorf("discover reply: %s", r.Raw)
			}
			uptime, _ := r.Body["uptime"].(float64)
			if uptime <= 0 || uptime != float64(int64(uptime)) {
				t.Errorf("uptime %v is not integer nanoseconds", r.Body["uptime"])
			}
		}
	}
	if !found {
		t.Errorf("no discover reply from %s among %d replies", token, len(replies))
	}
}
