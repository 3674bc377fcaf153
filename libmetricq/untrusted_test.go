package libmetricq_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// Everything that arrives on the source's RPC queue is untrusted: bad
// messages are answered with an error (requests with a reply_to) or
// dropped, each exactly once (no requeue loop), and the source carries on.
func TestUntrustedMessagesOnTheRPCQueue(t *testing.T) {
	startManager(t, manager.Config{})
	token := testenv.Token(t, "source")
	var configCalls atomic.Int32
	src := connect(t, token, libmetricq.WithLogger(slogDiscard()), libmetricq.WithConfigHandler(
		func(ctx context.Context, s *libmetricq.Source, config map[string]any) error {
			if _, initial := config["_id"]; initial {
				return nil
			}
			configCalls.Add(1)
			if config["panic"] == true {
				var m map[string]int
				m["handler bug"]++ // panics: nil map
			}
			if rate, ok := config["rate"]; ok {
				if _, ok := rate.(json.Number); !ok {
					return fmt.Errorf("rate must be a number, got %T", rate)
				}
			}
			return nil
		}))

	conn, err := amqp.Dial(testenv.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	replyQ, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	replies, err := ch.Consume(replyQ.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	send := func(body, correlationID, replyTo string) {
		t.Helper()
		if err := ch.Publish("", token+"-rpc", false, false, amqp.Publishing{Body: []byte(body), CorrelationId: correlationID, ReplyTo: replyTo, AppId: "attacker"}); err != nil {
			t.Fatal(err)
		}
	}
	huge := `{"function":"discover","pad":"` + strings.Repeat("x", 17<<20) + `"}`
	deep := `{"function":"config","x":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`
	send("this is not JSON", "c-text", replyQ.Name)
	send(huge, "c-huge", replyQ.Name)
	send(deep, "c-deep", replyQ.Name)
	send(`{"function":5}`, "c-type", replyQ.Name)
	send(`{"function":"no.such.rpc"}`, "c-unknown", replyQ.Name)
	send(`{"dataServerAddress":"vhost:/evil"}`, "c-late-reply", replyQ.Name)
	send(`{"function":"discover"}`, "c-no-reply-to", "")
	send("{\"function\":\"\xff\xfe\"}", "c-utf8", replyQ.Name)
	send(`{"function":"config","panic":true}`, "c-panic", replyQ.Name)
	send(`{"function":"config","rate":"fast"}`, "c-wrong-type", replyQ.Name)
	send(`[{"function":"discover"}]`, "c-array", replyQ.Name)
	send(`{"function":"discover"}`, "c-last", replyQ.Name)

	want := map[string]string{
		"c-type":       `"function\" is not a string`,
		"c-unknown":    "Missing rpc handler for no.such.rpc",
		"c-utf8":       "Missing rpc handler for",
		"c-panic":      "panicked",
		"c-wrong-type": "rate must be a number",
		"c-last":       `"alive":true`,
	}
	got := map[string]string{}
	deadline := time.After(waitLimit)
	for len(got) < len(want) {
		select {
		case d := <-replies:
			if _, dup := got[d.CorrelationId]; dup {
				t.Fatalf("two replies to %s", d.CorrelationId)
			}
			got[d.CorrelationId] = string(d.Body)
		case <-deadline:
			t.Fatalf("replies so far: %v", got)
		}
	}
	// Nothing else comes.
	select {
	case d := <-replies:
		t.Fatalf("unexpected reply %s: %s", d.CorrelationId, d.Body)
	case <-time.After(300 * time.Millisecond):
	}
	for id, text := range want {
		if !strings.Contains(got[id], text) {
			t.Errorf("reply to %s: %s, want it to contain %s", id, got[id], text)
		}
		var obj map[string]any
		if err := json.Unmarshal([]byte(got[id]), &obj); err != nil {
			t.Errorf("reply to %s is not a JSON object: %s", id, got[id])
		}
	}
	if n := configCalls.Load(); n != 2 {
		t.Fatalf("the config handler ran %d times, want 2: a message was handled twice (requeued?)", n)
	}
	// Still healthy.
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := src.DeclareMetricList(ctx, []string{"untrusted.ok"}); err != nil {
		t.Fatal(err)
	}
	if err := src.Send(ctx, "untrusted.ok", ts(1), 1); err != nil {
		t.Fatal(err)
	}
	if err := src.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// The password appears in no log line (at debug level), error, discover
// reply or stats output: through a refused login, forced disconnects,
// reconnects, giving up and stopping.
func TestSecretsNeverLeak(t *testing.T) {
	mgr := startManager(t, manager.Config{})
	api := testenv.ManagementAPI(t)
	token := testenv.Token(t, "source")
	var random [6]byte
	_, _ = rand.Read(random[:])
	password := "S3cr3t/pw@?#" + hex.EncodeToString(random[:])
	goodURL := api.CreateUser(t, token, password)
	var texts []string
	var logs logBuffer
	opts := []libmetricq.Option{libmetricq.WithLogger(logs.logger()), libmetricq.WithReconnectTimeout(time.Second)}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()

	u, _ := url.Parse(goodURL)
	u.User = url.UserPassword(token, password+"-wrong")
	bad, err := libmetricq.NewSource(u.String(), token, opts...)
	if err != nil {
		t.Fatal(err)
	}
	// RabbitMQ answers a refused login after about 3 s: meanwhile, the rest.
	badErr := make(chan error, 1)
	go func() { badErr <- bad.Connect(ctx) }()
	if _, err := libmetricq.NewSource(strings.Replace(goodURL, "127.0.0.1", "127.0.0.1:notaport", 1), token, opts...); err != nil {
		texts = append(texts, err.Error())
	}

	src, err := libmetricq.NewSource(goodURL, token, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopSoon(src) })
	if err := src.DeclareMetricList(ctx, []string{"secret.metric"}); err != nil {
		t.Fatal(err)
	}
	api.CloseConnections(t, "connection "+token, 2, 10*time.Second)
	waitUntil(t, 10*time.Second, "the reconnect", func() bool { st := src.Stats(); return st.Reconnects > 0 && st.ManagementReconnects > 0 })
	replies, err := mgr.Broadcast(ctx, "discover", nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range replies {
		body, _ := json.Marshal(r.Body)
		texts = append(texts, string(body))
	}
	texts = append(texts, fmt.Sprintf("%+v %#v", src.Stats(), src.Stats()))
	if err := src.Send(ctx, "secret.metric", ts(1), 1); err != nil {
		t.Fatal(err)
	}
	api.Revoke(t, token)
	api.CloseConnections(t, "connection "+token, 2, 10*time.Second)
	select {
	case <-src.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("the source did not give up")
	}
	texts = append(texts, src.Err().Error(), src.Send(ctx, "secret.metric", ts(2), 1).Error())
	if err := src.Stop(ctx); err != nil {
		texts = append(texts, err.Error())
	}
	err = <-badErr
	if err == nil {
		t.Fatal("a wrong password must be refused")
	}
	texts = append(texts, err.Error(), fmt.Sprintf("%+v", src.Stats()), logs.String())
	all := strings.Join(texts, "\n")
	mustContain(t, "what was collected", all, "403", "xxxxx", "not restored")
	for _, form := range []string{password, url.QueryEscape(password), url.PathEscape(password), "S3cr3t"} {
		if strings.Contains(all, form) {
			t.Fatalf("the password (as %q) leaked:\n%s", form, all)
		}
	}
}
