package libmetricq_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

const waitLimit = 20 * time.Second

type received struct {
	metric string
	points []libmetricq.Point
}

// rawSink binds its own queue to metricq.data (PROTOCOL §10.2), so every
// message arrives exactly as published, chunk boundaries included.
func rawSink(t *testing.T, url string, metrics ...string) <-chan received {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("sink: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range append(metrics, "marker.#") {
		if err := ch.QueueBind(q.Name, m, "metricq.data", false, nil); err != nil {
			t.Fatal(err)
		}
	}
	deliveries, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan received, 10000)
	go func() {
		defer close(out)
		for d := range deliveries {
			points, err := libmetricq.DecodeDataChunk(d.Body)
			if err != nil {
				t.Errorf("sink: undecodable chunk on %s: %v", d.RoutingKey, err)
				continue
			}
			out <- received{d.RoutingKey, points}
		}
	}()
	return out
}

func next(t *testing.T, c <-chan received) received {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(waitLimit):
		t.Fatal("no chunk arrived")
	}
	return received{}
}

// nothingPending proves that no chunk is queued: a marker published after
// the fact arrives first.
func nothingPending(t *testing.T, url string, c <-chan received, marker string) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	body := libmetricq.EncodeDataChunk([]libmetricq.Point{{Time: 1, Value: 0}})
	if err := ch.Publish("metricq.data", marker, false, false, amqp.Publishing{Body: body}); err != nil {
		t.Fatal(err)
	}
	if r := next(t, c); r.metric != marker {
		t.Fatalf("unexpected chunk before the marker: %+v", r)
	}
}

func startManager(t *testing.T, cfg manager.Config) *manager.Manager {
	t.Helper()
	testenv.ExclusiveVhost(t)
	cfg.URL = testenv.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	m, err := manager.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("manager: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func connect(t *testing.T, token string, opts ...libmetricq.Option) *libmetricq.Source {
	t.Helper()
	return connectURL(t, testenv.URL(t), token, opts...)
}

func connectURL(t *testing.T, url, token string, opts ...libmetricq.Option) *libmetricq.Source {
	t.Helper()
	src, err := libmetricq.NewSource(url, token, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := src.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopSoon(src) })
	return src
}

func ts(i int) libmetricq.Timestamp {
	return libmetricq.Timestamp(1_700_000_000_000_000_000 + int64(i)*1_000_000)
}

func expectPoints(t *testing.T, r received, metric string, from, count int) {
	t.Helper()
	if r.metric != metric || len(r.points) != count {
		t.Fatalf("got %d points of %s, want %d of %s", len(r.points), r.metric, count, metric)
	}
	for i, p := range r.points {
		if p.Time != ts(from+i) || p.Value != float64(from+i) {
			t.Fatalf("point %d of %s = %+v, want time %d value %d", i, metric, p, ts(from+i), from+i)
		}
	}
}

func TestSourceDeclaresWithMetadata(t *testing.T) {
	mgr := startManager(t, manager.Config{})
	token := testenv.Token(t, "source")
	src := connect(t, token)
	ctx := context.Background()
	if err := src.SetChunkSize(10); err != nil {
		t.Fatal(err)
	}
	err := src.DeclareMetrics(ctx, map[string]libmetricq.Metadata{
		"test.power": {"unit": "W", "rate": 10, "source": "forged", "_private": 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.SetChunkSize(libmetricq.ChunkSizeManual); err != nil {
		t.Fatal(err)
	}
	if err := src.DeclareMetricList(ctx, []string{"test.listed"}); err != nil {
		t.Fatal(err)
	}
	md := mgr.Metadata()
	power, listed := md["test.power"], md["test.listed"]
	if power["unit"] != "W" || fmt.Sprint(power["chunkSize"]) != "10" || power["source"] != token || power["date"] == nil {
		t.Fatalf("test.power metadata: %v", power)
	}
	if _, ok := power["_private"]; ok {
		t.Fatalf("_-keys must not be stored: %v", power)
	}
	if v, ok := listed["chunkSize"]; !ok || v != nil {
		t.Fatalf("manual flushing must declare chunkSize null: %v", listed)
	}
	if got := strings.Join(src.DeclaredMetrics(), ","); got != "test.listed,test.power" {
		t.Fatalf("DeclaredMetrics = %s", got)
	}
	if err := src.DeclareMetricList(ctx, []string{"ok.name", "bad.#"}); !errors.Is(err, libmetricq.ErrInvalid) {
		t.Fatalf("a bad name must fail the whole declaration: %v", err)
	}
	if _, ok := mgr.Metadata()["ok.name"]; ok {
		t.Fatal("nothing may be declared when one name is bad")
	}
}

func TestSourceChunking(t *testing.T) {
	startManager(t, manager.Config{})
	url := testenv.URL(t)
	sink := rawSink(t, url, "test.one", "test.three", "test.manual")
	src := connect(t, testenv.Token(t, "source"))
	ctx := context.Background()
	if err := src.DeclareMetricList(ctx, []string{"test.one", "test.three", "test.manual"}); err != nil {
		t.Fatal(err)
	}
	if err := src.SetMetricChunkSize("test.three", 3); err != nil {
		t.Fatal(err)
	}
	if err := src.SetMetricChunkSize("test.manual", libmetricq.ChunkSizeManual); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := src.Send(ctx, "test.one", ts(i), float64(i)); err != nil {
			t.Fatal(err)
		}
	}
	expectPoints(t, next(t, sink), "test.one", 0, 1)
	expectPoints(t, next(t, sink), "test.one", 1, 1)

	for i := 0; i < 7; i++ {
		if err := src.Send(ctx, "test.three", ts(i), float64(i)); err != nil {
			t.Fatal(err)
		}
		if err := src.Send(ctx, "test.manual", ts(i), float64(i)); err != nil {
			t.Fatal(err)
		}
	}
	expectPoints(t, next(t, sink), "test.three", 0, 3)
	expectPoints(t, next(t, sink), "test.three", 3, 3)
	nothingPending(t, url, sink, "marker.one")

	if err := src.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := map[string]received{}
	for range 2 {
		r := next(t, sink)
		got[r.metric] = r
	}
	expectPoints(t, got["test.three"], "test.three", 6, 1)
	expectPoints(t, got["test.manual"], "test.manual", 0, 7)

	// Deltas restart in every chunk: a sink decoding each message on its own
	// got absolute times above, and an empty flush publishes nothing.
	if err := src.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	nothingPending(t, url, sink, "marker.two")
	st := src.Stats()
	if st.PointsAccepted != 16 || st.PointsConfirmed != 16 || st.BufferedPoints != 0 || st.ChunksConfirmed != 6 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSourceStopFlushesAndRefusesLaterCalls(t *testing.T) {
	startManager(t, manager.Config{})
	sink := rawSink(t, testenv.URL(t), "test.stop")
	src := connect(t, testenv.Token(t, "source"), libmetricq.WithChunkSize(100))
	ctx := context.Background()
	if err := src.DeclareMetricList(ctx, []string{"test.stop"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := src.Send(ctx, "test.stop", ts(i), float64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	expectPoints(t, next(t, sink), "test.stop", 0, 5)
	if err := src.Stop(ctx); err != nil {
		t.Fatalf("Stop must be idempotent: %v", err)
	}
	if err := src.Send(ctx, "test.stop", ts(10), 1); !errors.Is(err, libmetricq.ErrStopped) {
		t.Fatalf("send after stop: %v", err)
	}
	if err := src.Flush(ctx); !errors.Is(err, libmetricq.ErrStopped) {
		t.Fatalf("flush after stop: %v", err)
	}
	if err := src.DeclareMetricList(ctx, []string{"x.y"}); !errors.Is(err, libmetricq.ErrStopped) {
		t.Fatalf("declare after stop: %v", err)
	}
	select {
	case <-src.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
}

func TestSourceRejectsBadPoints(t *testing.T) {
	startManager(t, manager.Config{})
	sink := rawSink(t, testenv.URL(t), "test.order")
	src := connect(t, testenv.Token(t, "source"))
	ctx := context.Background()
	if err := src.Send(ctx, "test.order", ts(1), 1); !errors.Is(err, libmetricq.ErrUndeclared) {
		t.Fatalf("undeclared: %v", err)
	}
	if err := src.Send(ctx, "bad*name", ts(1), 1); !errors.Is(err, libmetricq.ErrInvalid) {
		t.Fatalf("bad name: %v", err)
	}
	if err := src.DeclareMetricList(ctx, []string{"test.order"}); err != nil {
		t.Fatal(err)
	}
	if err := src.SetMetricChunkSize("test.order", 4); err != nil {
		t.Fatal(err)
	}
	if err := src.Send(ctx, "test.order", ts(1), 1); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []libmetricq.Timestamp{ts(1), ts(0)} {
		if err := src.Send(ctx, "test.order", bad, 9); !errors.Is(err, libmetricq.ErrOrder) {
			t.Fatalf("time %d after %d: %v", bad, ts(1), err)
		}
	}
	batchErrs := []struct {
		times  []libmetricq.Timestamp
		values []float64
		kind   error
	}{
		{[]libmetricq.Timestamp{ts(2), ts(2)}, []float64{2, 2}, libmetricq.ErrOrder},
		{[]libmetricq.Timestamp{ts(1), ts(2)}, []float64{1, 2}, libmetricq.ErrOrder},
		{[]libmetricq.Timestamp{ts(2)}, []float64{2, 3}, libmetricq.ErrInvalid},
	}
	for _, b := range batchErrs {
		if err := src.SendBatch(ctx, "test.order", b.times, b.values); !errors.Is(err, b.kind) {
			t.Fatalf("batch %v: got %v, want %v", b.times, err, b.kind)
		}
	}
	// Nothing of the refused points was buffered: the chunk of 4 holds
	// exactly the accepted ones.
	if err := src.SendBatch(ctx, "test.order", []libmetricq.Timestamp{ts(2), ts(3), ts(4)}, []float64{2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	expectPoints(t, next(t, sink), "test.order", 1, 4)
}

func TestSourceDiscoverConfigAndUnknownRPC(t *testing.T) {
	mgr := startManager(t, manager.Config{Configs: map[string]map[string]any{}})
	token := testenv.Token(t, "source")
	mgr.SetConfig(token, map[string]any{"rate": 5})
	configs := make(chan map[string]any, 4)
	src := connect(t, token, libmetricq.WithClientVersion("9.9"), libmetricq.WithConfigHandler(
		func(ctx context.Context, s *libmetricq.Source, config map[string]any) error {
			configs <- config
			if config["fail"] == true {
				return errors.New("cannot use this config")
			}
			return s.DeclareMetricList(ctx, []string{"test.configured"})
		}))
	initial := <-configs
	if fmt.Sprint(initial["rate"]) != "5" || initial["_id"] != token {
		t.Fatalf("initial config %v", initial)
	}
	if !strings.Contains(string(src.Config()), `"rate":5`) {
		t.Fatalf("Config() = %s", src.Config())
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()

	reply, err := mgr.Call(ctx, token, "config", map[string]any{"rate": 7})
	if err != nil || len(reply) != 0 {
		t.Fatalf("config RPC: reply %v, %v", reply, err)
	}
	if c := <-configs; fmt.Sprint(c["rate"]) != "7" {
		t.Fatalf("pushed config %v", c)
	}
	if _, err := mgr.Call(ctx, token, "config", map[string]any{"fail": true}); err == nil || !strings.Contains(err.Error(), "cannot use this config") {
		t.Fatalf("a failing handler must answer with an error: %v", err)
	}
	<-configs
	if _, ok := mgr.Metadata()["test.configured"]; !ok {
		t.Fatal("the config handler's declaration did not reach the manager")
	}
	if _, err := mgr.Call(ctx, token, "no.such.function", nil); err == nil || !strings.Contains(err.Error(), "Missing rpc handler for no.such.function") {
		t.Fatalf("unknown RPC: %v", err)
	}

	replies, err := mgr.Broadcast(ctx, "discover", nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var mine map[string]any
	for _, r := range replies {
		if r.AppID == token {
			mine = r.Body
		}
	}
	if mine == nil {
		t.Fatalf("no discover reply from %s among %d", token, len(replies))
	}
	if mine["alive"] != true || mine["metricqVersion"] != libmetricq.VersionString || mine["version"] != "9.9" || mine["hostname"] == "" {
		t.Fatalf("discover reply %v", mine)
	}
	uptime, ok := mine["uptime"].(float64)
	if !ok || uptime <= 0 || uptime != float64(int64(uptime)) {
		t.Fatalf("uptime must be integer ns: %v", mine["uptime"])
	}
	if _, err := time.Parse(time.RFC3339Nano, mine["currentTime"].(string)); err != nil {
		t.Fatalf("currentTime: %v", err)
	}
}

func TestSourceRegisterRefused(t *testing.T) {
	startManager(t, manager.Config{RequireConfig: true})
	src, err := libmetricq.NewSource(testenv.URL(t), testenv.Token(t, "source"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	err = src.Connect(ctx)
	var rpcErr *libmetricq.RPCError
	if !errors.As(err, &rpcErr) || !errors.Is(err, libmetricq.ErrRPC) || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("want the manager's error, got %v", err)
	}
	if err := src.Send(ctx, "a.b", 1, 1); err == nil {
		t.Fatal("a source that failed to connect must refuse sends")
	}
}

func TestSourceManagerSilentOrAbsent(t *testing.T) {
	// No manager has ever run on a fresh vhost: the exchanges are missing.
	src, _ := libmetricq.NewSource(testenv.FreshVhost(t), testenv.Token(t, "source"))
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := src.Connect(ctx); !errors.Is(err, libmetricq.ErrConnect) || !strings.Contains(err.Error(), "manager") {
		t.Fatalf("no exchanges: %v", err)
	}

	// A manager that ran once and is gone: the request waits in its queue.
	mgr := startManager(t, manager.Config{})
	mgr.Close()
	src, _ = libmetricq.NewSource(testenv.URL(t), testenv.Token(t, "source"))
	short, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	start := time.Now()
	err := src.Connect(short)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "source.register") {
		t.Fatalf("silent manager: %v", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("Connect took %v with a 500ms timeout", elapsed)
	}
}

func TestConcurrentSendsAndFlushesNeverDuplicate(t *testing.T) {
	startManager(t, manager.Config{})
	sink := rawSink(t, testenv.URL(t), "test.shared")
	src := connect(t, testenv.Token(t, "source"), libmetricq.WithChunkSize(7))
	ctx := context.Background()
	if err := src.DeclareMetricList(ctx, []string{"test.shared"}); err != nil {
		t.Fatal(err)
	}
	const workers, perWorker = 4, 500
	var mu sync.Mutex // orders timestamps across workers; the source sees interleaved callers
	nextTime := 0
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				mu.Lock()
				n := nextTime
				nextTime++
				err := src.Send(ctx, "test.shared", ts(n), float64(n))
				mu.Unlock()
				if err != nil {
					t.Error(err)
					return
				}
				if i%50 == 0 {
					if err := src.Flush(ctx); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := src.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	seen := 0
	for seen < workers*perWorker {
		r := next(t, sink)
		for _, p := range r.points {
			if p.Time != ts(seen) {
				t.Fatalf("point %d has time %d, want %d (lost, duplicated or reordered)", seen, p.Time, ts(seen))
			}
			seen++
		}
	}
	nothingPending(t, testenv.URL(t), sink, "marker.end")
}

func TestTaskAndIntervalSource(t *testing.T) {
	startManager(t, manager.Config{})
	sink := rawSink(t, testenv.URL(t), "test.interval")
	var src *libmetricq.IntervalSource
	var err error
	updates := 0
	src, err = libmetricq.NewIntervalSource(testenv.URL(t), testenv.Token(t, "source"),
		func(ctx context.Context, s *libmetricq.IntervalSource) error {
			updates++
			if updates == 4 {
				return errors.New("sensor unplugged")
			}
			return s.Send(ctx, "test.interval", ts(updates), float64(updates))
		},
		libmetricq.WithConfigHandler(func(ctx context.Context, s *libmetricq.Source, _ map[string]any) error {
			if err := src.SetPeriod(10 * libmetricq.Millisecond); err != nil {
				return err
			}
			return s.DeclareMetricList(ctx, []string{"test.interval"})
		}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	err = src.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "sensor unplugged") {
		t.Fatalf("an update error must stop the source and be returned by Run: %v", err)
	}
	for i := 1; i <= 3; i++ {
		r := next(t, sink)
		if len(r.points) != 1 || r.points[0].Time != ts(i) {
			t.Fatalf("update %d sent %+v", i, r.points)
		}
	}
	if !errors.Is(src.Send(ctx, "test.interval", ts(99), 1), libmetricq.ErrStopped) {
		t.Fatal("the stopped source still accepts points")
	}
}
