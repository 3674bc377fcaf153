// Command soak streams points from a libmetricq Source at a steady rate for a
// long time while its connections are force-closed periodically, and checks
// with a durable sink that nothing accepted is lost and that order holds.
//
//	scripts/with-vhost.sh go run ./tests/soak -duration 10m
//
// (`make soak` does that; SOAK_DURATION sets the duration.) It needs
// METRICQ_TEST_URL (a vhost of its own) and the broker's management API on
// port 15672. It prints progress every 10 s and at the end the points
// accepted, received, lost and duplicated, and the peak memory; it exits
// non-zero when a point was lost or arrived out of order. Duplicates are
// whole chunks published again because their confirmation was lost in a
// disconnect (docs/reliability.md); they are counted, not failed.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/libmetricq"
)

func main() {
	duration := flag.Duration("duration", envDuration("SOAK_DURATION", 10*time.Minute), "how long to stream")
	rate := flag.Int("rate", 2000, "points per second, over all metrics")
	nMetrics := flag.Int("metrics", 4, "number of metrics")
	chunkSize := flag.Int("chunk", 20, "chunk size")
	every := flag.Duration("disconnect-every", 15*time.Second, "force-close the source's connections this often (0: never)")
	flag.Parse()
	rawURL := os.Getenv("METRICQ_TEST_URL")
	if rawURL == "" {
		fail("METRICQ_TEST_URL is not set: run through scripts/with-vhost.sh")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, rawURL, *duration, *rate, *nMetrics, *chunkSize, *every); err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "soak:", msg)
	os.Exit(1)
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fail(fmt.Sprintf("%s=%q: %v", name, v, err))
		}
		return d
	}
	return def
}

var base = libmetricq.Timestamp(1_700_000_000_000_000_000)

func ts(i int64) libmetricq.Timestamp { return base + libmetricq.Timestamp(i*1000) }
func index(t libmetricq.Timestamp) int64 {
	return int64(t-base) / 1000
}

// tally is the sink's view of one metric.
type tally struct {
	mu         sync.Mutex
	last       int64 // index of the last point received, -1 before any
	received   int64
	duplicated int64
	lost       int64
	disorder   int64
}

type soak struct {
	metrics []string
	tallies map[string]*tally
	sent    map[string]*atomic.Int64 // next index to send
	refused sync.Map                 // metric + index -> struct{}: Sends that timed out
	peak    atomic.Uint64
}

func run(ctx context.Context, rawURL string, duration time.Duration, rate, nMetrics, chunkSize int, every time.Duration) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	mgr, err := manager.Start(ctx, manager.Config{URL: rawURL, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	defer mgr.Close()
	token := fmt.Sprintf("soak-%d", time.Now().UnixNano())
	s := &soak{tallies: map[string]*tally{}, sent: map[string]*atomic.Int64{}}
	for i := range nMetrics {
		m := fmt.Sprintf("soak.metric%d", i)
		s.metrics = append(s.metrics, m)
		s.tallies[m] = &tally{last: -1}
		s.sent[m] = new(atomic.Int64)
	}
	queue := token + "-sink"
	if err := declareSinkQueue(rawURL, queue); err != nil {
		return err
	}
	defer deleteQueue(rawURL, queue)
	sinkCtx, stopSink := context.WithCancel(context.Background())
	defer stopSink()
	sinkDone := make(chan struct{})
	go func() { defer close(sinkDone); s.sink(sinkCtx, rawURL, queue) }()

	src, err := libmetricq.NewSource(rawURL, token, libmetricq.WithChunkSize(chunkSize), libmetricq.WithLogger(log))
	if err != nil {
		return err
	}
	if err := src.Connect(ctx); err != nil {
		return err
	}
	if err := src.DeclareMetricList(ctx, s.metrics); err != nil {
		return err
	}
	go s.sampleMemory(sinkCtx)

	fmt.Printf("soak: %v at %d points/s over %d metrics (chunks of %d), disconnecting every %v\n", duration, rate, nMetrics, chunkSize, every)
	streamCtx, stopStream := context.WithTimeout(ctx, duration)
	defer stopStream()
	streamDone := make(chan struct{})
	go func() { defer close(streamDone); s.stream(streamCtx, src, rate) }()

	start := time.Now()
	report := time.NewTicker(10 * time.Second)
	defer report.Stop()
	var disconnect <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		disconnect = t.C
	}
	disconnects := 0
loop:
	for {
		select {
		case <-streamDone:
			break loop
		case <-report.C:
			st := src.Stats()
			fmt.Printf("%6.0fs accepted %d confirmed %d received %d buffered %d republished chunks %d reconnects %d/%d heap peak %.1f MiB\n",
				time.Since(start).Seconds(), st.PointsAccepted, st.PointsConfirmed, s.receivedTotal(), st.BufferedPoints,
				st.ChunksRepublished, st.Reconnects, st.ManagementReconnects, float64(s.peak.Load())/(1<<20))
		case <-disconnect:
			n, err := closeConnections(rawURL, "connection "+token)
			if err != nil {
				fmt.Println("soak: disconnect:", err)
			}
			disconnects += n
		}
	}
	flushCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := src.Flush(flushCtx); err != nil {
		fmt.Println("soak: final flush:", err)
	}
	st := src.Stats()
	if err := src.Stop(flushCtx); err != nil {
		fmt.Println("soak: stop:", err)
	}
	// Wait for the sink to drain.
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && !s.caughtUp() {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // stragglers (duplicates) after the last point
	stopSink()
	<-sinkDone

	var accepted, received, lost, duplicated, disorder int64
	for _, m := range s.metrics {
		t := s.tallies[m]
		t.mu.Lock()
		sent := s.sent[m].Load()
		for i := t.last + 1; i < sent; i++ {
			if _, refused := s.refused.Load(key(m, i)); !refused {
				t.lost++
			}
		}
		received += t.received
		lost += t.lost
		duplicated += t.duplicated
		disorder += t.disorder
		t.mu.Unlock()
	}
	accepted = int64(st.PointsAccepted)
	fmt.Printf("\nsoak result after %v, %d connections force-closed:\n", time.Since(start).Round(time.Second), disconnects)
	fmt.Printf("  points accepted   %d\n", accepted)
	fmt.Printf("  points received   %d\n", received)
	fmt.Printf("  points lost       %d\n", lost)
	fmt.Printf("  points duplicated %d (in whole republished chunks; %d chunks republished)\n", duplicated, st.ChunksRepublished)
	fmt.Printf("  out of order      %d\n", disorder)
	fmt.Printf("  sends refused     %d (buffer full)\n", st.BufferFullTimeouts)
	fmt.Printf("  reconnects        data %d, management %d\n", st.Reconnects, st.ManagementReconnects)
	fmt.Printf("  peak memory       heap %.1f MiB, process RSS (VmHWM) %s\n", float64(s.peak.Load())/(1<<20), vmHWM())
	if lost > 0 || disorder > 0 || received != accepted {
		return fmt.Errorf("FAILED: %d lost, %d out of order, %d received of %d accepted", lost, disorder, received, accepted)
	}
	fmt.Println("soak: OK")
	return nil
}

func key(metric string, i int64) string { return fmt.Sprintf("%s#%d", metric, i) }

// stream sends rate points per second, round robin over the metrics, in
// bursts every 10 ms.
func (s *soak) stream(ctx context.Context, src *libmetricq.Source, rate int) {
	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	perTick := float64(rate) * tick.Seconds()
	var owed float64
	next := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		owed += perTick
		for ; owed >= 1; owed-- {
			m := s.metrics[next%len(s.metrics)]
			next++
			i := s.sent[m].Load()
			sendCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := src.Send(sendCtx, m, ts(i), float64(i))
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				s.refused.Store(key(m, i), struct{}{})
				fmt.Println("soak: send refused:", err)
			}
			s.sent[m].Store(i + 1)
		}
	}
}

func (s *soak) receivedTotal() int64 {
	var n int64
	for _, t := range s.tallies {
		t.mu.Lock()
		n += t.received
		t.mu.Unlock()
	}
	return n
}

func (s *soak) caughtUp() bool {
	for _, m := range s.metrics {
		t := s.tallies[m]
		t.mu.Lock()
		last := t.last
		t.mu.Unlock()
		for i := last + 1; i < s.sent[m].Load(); i++ {
			if _, refused := s.refused.Load(key(m, i)); !refused {
				return false
			}
		}
	}
	return true
}

// account checks one arriving chunk: new points must continue the metric
// without a gap (but for refused sends); a chunk that starts at or before
// the last point is a republished repeat and must lie wholly before it.
func (s *soak) account(metric string, points []libmetricq.Point) {
	t := s.tallies[metric]
	if t == nil || len(points) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	first := index(points[0].Time)
	if first <= t.last {
		if index(points[len(points)-1].Time) > t.last {
			t.disorder++
		}
		t.duplicated += int64(len(points))
		return
	}
	for _, p := range points {
		i := index(p.Time)
		if i <= t.last || p.Value != float64(i) {
			t.disorder++
			continue
		}
		for gap := t.last + 1; gap < i; gap++ {
			if _, refused := s.refused.Load(key(metric, gap)); !refused {
				t.lost++
			}
		}
		t.last = i
		t.received++
	}
}

func (s *soak) sink(ctx context.Context, rawURL, queue string) {
	for ctx.Err() == nil {
		s.consume(ctx, rawURL, queue)
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *soak) consume(ctx context.Context, rawURL, queue string) {
	conn, err := amqp.Dial(rawURL)
	if err != nil {
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	_ = ch.Qos(1000, 0, false)
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case d, ok := <-deliveries:
			if !ok {
				return
			}
			points, err := libmetricq.DecodeDataChunk(d.Body)
			if err != nil {
				fmt.Println("soak: undecodable chunk:", err)
			} else {
				// The soak never disconnects the sink, so a redelivery (the
				// sink's own ack lost) cannot happen; were it to, it would be
				// counted as a duplicate.
				s.account(d.RoutingKey, points)
			}
			_ = d.Ack(false)
		}
	}
}

func declareSinkQueue(rawURL, queue string) error {
	conn, err := amqp.Dial(rawURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		return err
	}
	return ch.QueueBind(queue, "soak.#", amqpkit.DataExchange, false, nil)
}

func deleteQueue(rawURL, queue string) {
	if conn, err := amqp.Dial(rawURL); err == nil {
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(queue, false, false, false)
		}
		conn.Close()
	}
}

// closeConnections force-closes the connections whose client-chosen name
// contains substr, through the management API.
func closeConnections(rawURL, substr string) (int, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return 0, err
	}
	pass, _ := u.User.Password()
	api := "http://" + u.Hostname() + ":15672/api/"
	do := func(method, path string) (*http.Response, error) {
		req, err := http.NewRequest(method, api+path, nil)
		if err != nil {
			return nil, err
		}
		req.SetBasicAuth(u.User.Username(), pass)
		return http.DefaultClient.Do(req)
	}
	resp, err := do(http.MethodGet, "connections?columns=name,client_properties")
	if err != nil {
		return 0, err
	}
	var conns []struct {
		Name  string         `json:"name"`
		Props map[string]any `json:"client_properties"`
	}
	err = json.NewDecoder(resp.Body).Decode(&conns)
	resp.Body.Close()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range conns {
		if name, _ := c.Props["connection_name"].(string); strings.Contains(name, substr) {
			if resp, err := do(http.MethodDelete, "connections/"+url.PathEscape(c.Name)); err == nil {
				resp.Body.Close()
				if resp.StatusCode < 300 {
					n++
				}
			}
		}
	}
	return n, nil
}

func (s *soak) sampleMemory(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var m runtime.MemStats
	for {
		runtime.ReadMemStats(&m)
		if m.HeapInuse > s.peak.Load() {
			s.peak.Store(m.HeapInuse)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func vmHWM() string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
