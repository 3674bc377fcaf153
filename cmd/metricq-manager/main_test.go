package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// signalHandler passes log records on and reports the tokens of sinks that
// have subscribed, so the test knows when to publish.
type signalHandler struct {
	slog.Handler
	subscribed chan string
}

func (h signalHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "sink subscribed" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "token" {
				h.subscribed <- a.Value.String()
			}
			return true
		})
	}
	return h.Handler.Handle(ctx, r)
}

func (h signalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return signalHandler{h.Handler.WithAttrs(as), h.subscribed}
}

// runTailWithData runs "tail" with args, publishes points to metric once it
// has subscribed and returns its exit code, stdout and stderr.
func runTailWithData(t *testing.T, args []string, metric string, points []libmetricq.Point) (int, string, string) {
	t.Helper()
	testenv.ExclusiveVhost(t)
	url := testenv.URL(t)
	subscribed := make(chan string, 4)
	var logs bytes.Buffer
	log := slog.New(signalHandler{slog.NewTextHandler(&logs, nil), subscribed})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := manager.Start(ctx, manager.Config{URL: url, Logger: log})
	if err != nil {
		t.Fatalf("start manager: %v", err)
	}
	defer m.Close()

	token := testenv.Token(t, "sink-tail")
	var stdout, stderr bytes.Buffer
	rc := make(chan int, 1)
	go func() {
		rc <- run(append(append([]string{"tail", "-token", token, "-timeout", "10s"}, args...), url, metric), &stdout, &stderr)
	}()
	select {
	case got := <-subscribed:
		if got != token {
			t.Fatalf("unexpected subscriber %s", got)
		}
	case code := <-rc:
		t.Fatalf("tail exited with %d before subscribing: %s", code, stderr.String())
	case <-ctx.Done():
		t.Fatal("tail did not subscribe")
	}

	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range points {
		body := libmetricq.EncodeDataChunk([]libmetricq.Point{p})
		if err := ch.Publish(amqpkit.DataExchange, metric, false, false, amqp.Publishing{Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case code := <-rc:
		return code, stdout.String(), stderr.String()
	case <-time.After(15 * time.Second):
		t.Fatal("tail did not exit")
	}
	return 0, "", ""
}

func TestTail(t *testing.T) {
	t0 := libmetricq.Timestamp(1_700_000_000_123_456_789)
	points := []libmetricq.Point{{Time: t0, Value: 1.5}, {Time: t0 + 1, Value: -2}, {Time: t0 + 2, Value: 1e300}}
	code, out, errOut := runTailWithData(t, []string{"-n", "2"}, "tail.test.power", points)
	if code != 0 {
		t.Fatalf("exit code %d: %s", code, errOut)
	}
	want := "tail.test.power 2023-11-14T22:13:20.123456789Z 1.5\ntail.test.power 2023-11-14T22:13:20.12345679Z -2\n"
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
}

func TestTailJSON(t *testing.T) {
	t0 := libmetricq.Timestamp(1_700_000_000_000_000_000)
	points := []libmetricq.Point{{Time: t0, Value: 3}}
	code, out, errOut := runTailWithData(t, []string{"-json", "-n", "1"}, "tail.test.json", points)
	if code != 0 {
		t.Fatalf("exit code %d: %s", code, errOut)
	}
	var got struct {
		Metric string
		Time   int64
		Value  float64
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Metric != "tail.test.json" || got.Time != int64(t0) || got.Value != 3 {
		t.Errorf("output %q (%v)", out, err)
	}
}

func TestTailTimeoutBeforeCount(t *testing.T) {
	testenv.ExclusiveVhost(t)
	url := testenv.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := manager.Start(ctx, manager.Config{URL: url, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var stdout, stderr bytes.Buffer
	// The timeout also covers connecting and subscribing: long enough for
	// those on a loaded machine, so that it ends while waiting for points.
	code := run([]string{"tail", "-n", "1", "-timeout", "2s", url, "tail.test.silent"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "timeout after 0 of 1 points") {
		t.Errorf("exit code %d, stderr %q", code, stderr.String())
	}
}

func TestUnreachableBroker(t *testing.T) {
	const url = "amqp://guest:s3cr3t-pw@127.0.0.1:1/"
	for _, args := range [][]string{{url}, {"tail", "-timeout", "5s", url, "a.b"}} {
		var stdout, stderr bytes.Buffer
		code := run(args, &stdout, &stderr)
		if code != 1 {
			t.Errorf("%v: exit code %d, want 1", args, code)
		}
		if strings.Contains(stderr.String(), "s3cr3t") {
			t.Errorf("%v: the password is printed: %s", args, stderr.String())
		}
		if !regexp.MustCompile(`to amqp://guest:xxxxx@127\.0\.0\.1:1/: .*refused`).MatchString(stderr.String()) {
			t.Errorf("%v: unclear error: %q", args, stderr.String())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"tail", "amqp://h/"}, {"-nosuchflag"}, {"a", "b"}, {"tail", "-n", "-1", "amqp://h/", "m"}} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit code %d, want 2", args, code)
		}
	}
}
