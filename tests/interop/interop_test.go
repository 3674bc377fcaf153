// Package interop tests libmetricq against the reference implementation,
// the Python package metricq (5.4.0), run from METRICQ_PYTHON: a Python Sink
// receives what a Go Source sends, a Python Source is read by the Go tail
// command and sink, and a Python client calls the Go source's RPCs. All of
// them meet at the local manager (internal/manager) on the test vhost.
//
// Run: METRICQ_PYTHON=$PWD/.venv/bin/python scripts/with-vhost.sh go test ./tests/interop/...
package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// testTimeout bounds each test's protocol exchange (not the one-off build of
// the tail command).
const testTimeout = 60 * time.Second

// startManager starts the local manager in-process, logging to a buffer that
// is shown when the test fails. subscribed (may be nil) receives the token
// of each sink once the manager has bound its queue.
func startManager(ctx context.Context, t *testing.T, subscribed chan string) *manager.Manager {
	t.Helper()
	testenv.ExclusiveVhost(t)
	logs := &syncBuffer{}
	var h slog.Handler = slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})
	if subscribed != nil {
		h = subscribedHandler{h, subscribed}
	}
	m, err := manager.Start(ctx, manager.Config{URL: testenv.URL(t), Logger: slog.New(h)})
	if err != nil {
		t.Fatalf("start manager: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close manager: %v", err)
		}
		if t.Failed() {
			t.Logf("manager log:\n%s", logs.String())
		}
	})
	return m
}

// sourceLog routes a Go source's log to a buffer shown when the test fails
// (the default logger writes warnings to stderr, and these tests provoke
// some on purpose).
func sourceLog(t *testing.T) libmetricq.Option {
	t.Helper()
	logs := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Go source log:\n%s", logs.String())
		}
	})
	return libmetricq.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
}

// point is a data point as the tests compare them: the time in ns and the
// value's IEEE-754 bits, so NaN payloads and -0 count.
type point struct {
	Time int64
	Bits uint64
}

func (p point) String() string {
	return fmt.Sprintf("(%d ns, %v [%#016x])", p.Time, math.Float64frombits(p.Bits), p.Bits)
}

func pt(t int64, v float64) point { return point{t, math.Float64bits(v)} }

func (p point) ts() libmetricq.Timestamp { return libmetricq.Timestamp(p.Time) }
func (p point) value() float64           { return math.Float64frombits(p.Bits) }

// series is what one metric is expected to receive: its points, in order,
// and the number of points in each data message.
type series struct {
	points []point
	chunks []int
}

// same says whether a received point is the sent one: the same time and
// the same bits, except that any NaN matches any NaN. (The reference's
// decoder, protobuf's pure-Python implementation, replaces every NaN it
// reads by inf*0, i.e. 0xfff8000000000000 on x86; the payload of a NaN is
// not preserved by MetricQ.)
func same(got, want point) bool {
	if got.Time != want.Time {
		return false
	}
	return got.Bits == want.Bits || (math.IsNaN(got.value()) && math.IsNaN(want.value()))
}

// comparePoints reports every difference between got and want for metric.
func comparePoints(t *testing.T, who, metric string, got, want []point) {
	t.Helper()
	if slices.EqualFunc(got, want, same) {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: metric %s: got %d points, want %d:\n", who, metric, len(got), len(want))
	for i := range max(len(got), len(want)) {
		var g, w string
		if i < len(got) {
			g = got[i].String()
		}
		if i < len(want) {
			w = want[i].String()
		}
		mark := "!="
		if i < len(got) && i < len(want) && same(got[i], want[i]) {
			mark = "  "
		}
		fmt.Fprintf(&b, "  %3d %s got %-60s want %s\n", i, mark, g, w)
	}
	t.Error(b.String())
}

// pyPoint is a point line of py_sink.py.
type pyPoint struct {
	Metric string   `json:"metric"`
	Time   *int64   `json:"time"`
	Value  *float64 `json:"value"`
	Bits   *uint64  `json:"bits"`
}

// TestInteropPythonSinkReceivesGoSource: a reference metricq.Sink subscribes
// through the manager; a Go Source declares and sends points with every
// chunking mode (1, N, manual with Flush, SendBatch, the remainder flushed
// by Stop) and special values. The Python sink must decode exactly those
// points, bit for bit, in order, in the expected messages.
func TestInteropPythonSinkReceivesGoSource(t *testing.T) {
	py := python(t)
	url := testenv.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	mgr := startManager(ctx, t, nil)

	prefix := "interop." + randomHex(4) + "."
	var (
		single  = prefix + "single"  // chunk size 1
		chunked = prefix + "chunked" // chunk size 4, remainder by Flush
		manual  = prefix + "manual"  // manual: Send, SendBatch, Flush
		batch   = prefix + "batch"   // chunk size 3, SendBatch; Stop flushes the rest
		extreme = prefix + "extreme" // chunk size 2, timestamps at the int64 limits
		marker  = prefix + "marker"  // sent by a second source after the first stopped
	)
	metrics := []string{single, chunked, manual, batch, extreme, marker}

	sink := start(ctx, t, py, script(t, "py_sink.py"), url, testenv.Token(t, "sink-interop"), single, chunked, manual, batch, extreme, marker)
	ready := sink.next(ctx, "the ready line")
	if ev := event(t, ready); ev != "ready" {
		t.Fatalf("py_sink.py: first line is not ready: %s", ready)
	}

	// The points.
	t0 := int64(1_700_000_000_123_456_789)
	want := map[string]*series{}
	for _, m := range metrics {
		want[m] = &series{}
	}
	singleValues := []float64{1.5, -2.25, math.NaN(), math.Inf(1), math.Inf(-1), math.Copysign(0, -1), 0,
		math.SmallestNonzeroFloat64, math.MaxFloat64, -math.MaxFloat64, 0.1, -1e-300, 123456789.123456789}
	for i, v := range singleValues {
		want[single].points = append(want[single].points, pt(t0+int64(i*i)*7919+int64(i), v))
		want[single].chunks = append(want[single].chunks, 1)
	}
	t2100 := int64(4_102_444_800_000_000_001) // 2100-01-01T00:00:00.000000001Z
	for i := range 10 {
		want[chunked].points = append(want[chunked].points, pt(t2100+int64(i)*333_333_333+int64(i%3), float64(i)*-0.5))
	}
	want[chunked].chunks = []int{4, 4, 2}
	for i := range 15 {
		want[manual].points = append(want[manual].points, pt(t0+int64(i)*1_000_000_001, math.Pow(-3, float64(i))))
	}
	want[manual].chunks = []int{7, 8}
	for i := range 8 {
		want[batch].points = append(want[batch].points, pt(t0+5+int64(i), 1/float64(i+1)))
	}
	want[batch].chunks = []int{3, 3, 2}
	want[extreme].points = []point{
		pt(-9_000_000_000_000_000_000, -1), // 1684, before the epoch: a negative first delta
		pt(-1, math.NaN()),
		pt(0, 0),
		pt(1, 1),
		pt(math.MaxInt64-1, 5e307),
		pt(math.MaxInt64, -7), // 2262-04-11T23:47:16.854775807Z
	}
	want[extreme].chunks = []int{2, 2, 2}

	srcToken := testenv.Token(t, "source-interop")
	src, err := libmetricq.NewSource(url, srcToken, sourceLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Stop(context.Background())
	if err := src.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	for metric, n := range map[string]int{chunked: 4, manual: libmetricq.ChunkSizeManual, batch: 3, extreme: 2} {
		if err := src.SetMetricChunkSize(metric, n); err != nil {
			t.Fatal(err)
		}
	}
	declared := map[string]libmetricq.Metadata{}
	for _, m := range metrics[:5] {
		declared[m] = libmetricq.Metadata{"unit": "W", "description": "interop test " + m}
	}
	if err := src.DeclareMetrics(ctx, declared); err != nil {
		t.Fatal(err)
	}
	send := func(metric string, p point) {
		t.Helper()
		if err := src.Send(ctx, metric, p.ts(), p.value()); err != nil {
			t.Fatalf("send %s %v: %v", metric, p, err)
		}
	}
	sendBatch := func(metric string, ps []point) {
		t.Helper()
		times := make([]libmetricq.Timestamp, len(ps))
		values := make([]float64, len(ps))
		for i, p := range ps {
			times[i], values[i] = p.ts(), p.value()
		}
		if err := src.SendBatch(ctx, metric, times, values); err != nil {
			t.Fatalf("send batch %s: %v", metric, err)
		}
	}
	flush := func() {
		t.Helper()
		if err := src.Flush(ctx); err != nil {
			t.Fatalf("flush: %v", err)
		}
	}
	// Interleave the metrics.
	for i := range 10 {
		send(single, want[single].points[i])
		send(chunked, want[chunked].points[i])
		if i < 7 {
			send(manual, want[manual].points[i])
		}
	}
	for _, p := range want[single].points[10:] {
		send(single, p)
	}
	for _, p := range want[extreme].points {
		send(extreme, p)
	}
	flush() // chunked: the last 2 (after 4 + 4); manual: the first 7
	for _, p := range want[manual].points[7:10] {
		send(manual, p)
	}
	sendBatch(manual, want[manual].points[10:])
	flush()                              // manual: 3 sent + 5 batched
	sendBatch(batch, want[batch].points) // seals 3 + 3; Stop publishes the last 2
	if err := src.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if st := src.Stats(); st.PointsConfirmed != st.PointsAccepted {
		t.Errorf("stats after stop: %d points accepted, %d confirmed", st.PointsAccepted, st.PointsConfirmed)
	}

	// The marker comes from a second source once the first one has stopped
	// (all its chunks confirmed, hence queued): everything the Python sink
	// gets before the marker is everything the first source sent.
	markerSrc, err := libmetricq.NewSource(url, testenv.Token(t, "source-interop-marker"), sourceLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer markerSrc.Stop(context.Background())
	if err := markerSrc.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := markerSrc.DeclareMetricList(ctx, []string{marker}); err != nil {
		t.Fatal(err)
	}
	markerPoint := pt(t0, 42)
	if err := markerSrc.Send(ctx, marker, markerPoint.ts(), markerPoint.value()); err != nil {
		t.Fatal(err)
	}
	if err := markerSrc.Stop(ctx); err != nil {
		t.Fatalf("stop marker source: %v", err)
	}
	want[marker] = &series{points: []point{markerPoint}, chunks: []int{1}}

	got := map[string]*series{}
	for _, m := range metrics {
		got[m] = &series{}
	}
	var unexpected []string
	pending := map[string]int{} // points of the current message, per metric
	record := func(line []byte) (isMarkerChunk bool) {
		t.Helper()
		switch event(t, line) {
		case "":
			var p pyPoint
			if err := json.Unmarshal(line, &p); err != nil || p.Time == nil || p.Bits == nil {
				t.Fatalf("py_sink.py: bad point line %s: %v", line, err)
			}
			s, ok := got[p.Metric]
			if !ok {
				unexpected = append(unexpected, string(line))
				return false
			}
			s.points = append(s.points, point{*p.Time, *p.Bits})
			pending[p.Metric]++
			// "value" is the number Python printed: it must be the value
			// of the bits, or null for NaN and ±Inf.
			v := math.Float64frombits(*p.Bits)
			finite := !math.IsNaN(v) && !math.IsInf(v, 0)
			if finite != (p.Value != nil) || (finite && math.Float64bits(*p.Value) != *p.Bits) {
				t.Errorf("py_sink.py: value %v does not match bits %#x in %s", p.Value, *p.Bits, line)
			}
		case "chunk":
			var c struct {
				Metric string `json:"metric"`
				Points int    `json:"points"`
			}
			if err := json.Unmarshal(line, &c); err != nil {
				t.Fatal(err)
			}
			if s, ok := got[c.Metric]; ok {
				s.chunks = append(s.chunks, c.Points)
				if pending[c.Metric] != c.Points {
					t.Errorf("py_sink.py: chunk line %s after %d points", line, pending[c.Metric])
				}
				pending[c.Metric] = 0
			}
			return c.Metric == marker
		default:
			t.Fatalf("py_sink.py: unexpected line %s", line)
		}
		return false
	}
	for !record(sink.next(ctx, "the marker point")) {
	}

	// Stop the sink (EOF on stdin); nothing may arrive after the marker.
	_ = sink.stdin.Close()
	for line := range sink.lines {
		if event(t, line) == "stopped" {
			break
		}
		t.Errorf("py_sink.py: line after the marker: %s", line)
	}
	sink.wait(ctx)

	for _, m := range metrics {
		comparePoints(t, "Python sink", m, got[m].points, want[m].points)
		if !slices.Equal(got[m].chunks, want[m].chunks) {
			t.Errorf("Python sink: metric %s: points per message %v, want %v", m, got[m].chunks, want[m].chunks)
		}
	}
	if len(unexpected) > 0 {
		t.Errorf("Python sink got points of metrics it did not subscribe to: %v", unexpected)
	}

	// The declaration carries chunkSize as the reference's does: the
	// metric's chunk size, null for manual flushing.
	stored := mgr.Metadata()
	for metric, size := range map[string]any{single: 1.0, chunked: 4.0, manual: nil, batch: 3.0, extreme: 2.0} {
		doc := stored[metric]
		if got, ok := doc["chunkSize"]; !ok || got != size {
			t.Errorf("metadata of %s: chunkSize %v (present: %v), want %v", metric, got, ok, size)
		}
		if doc["source"] != srcToken || doc["unit"] != "W" {
			t.Errorf("metadata of %s: %v", metric, doc)
		}
	}
}

// planStep and plan are the instructions py_source.py follows.
type planStep struct {
	Op     string `json:"op"`
	Metric string `json:"metric,omitempty"`
	Time   int64  `json:"time"`
	Bits   uint64 `json:"bits"`
}

type planMetric struct {
	Name      string         `json:"name"`
	Metadata  map[string]any `json:"metadata"`
	ChunkSize any            `json:"chunk_size,omitempty"` // int, or json null via nullChunk
}

// nullChunk marshals as null: the reference's "chunk_size = None" (manual).
type nullChunk struct{}

func (nullChunk) MarshalJSON() ([]byte, error) { return []byte("null"), nil }

type plan struct {
	ChunkSize int          `json:"chunk_size"`
	Metrics   []planMetric `json:"metrics"`
	Steps     []planStep   `json:"steps"`
}

// buildTail builds the metricq-manager command into dir.
func buildTail(t *testing.T, dir string) string {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build metricq-manager: %v", err)
	}
	bin := filepath.Join(dir, "metricq-manager")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goCmd, "build", "-o", bin, "github.com/libmetricq/libmetricq/cmd/metricq-manager").CombinedOutput()
	if err != nil {
		t.Fatalf("go build metricq-manager: %v\n%s", err, out)
	}
	return bin
}

// TestInteropPythonSourceReachesTail: a reference metricq.Source registers,
// declares metrics with metadata and sends points with chunk_size 3, 2 and
// None (manual) and a final flush. "metricq-manager tail -json" and an
// in-process manager.Subscribe sink must both get exactly those points (the
// in-process sink also the reference's chunking), and the manager must hold
// the declared metadata with chunkSize and source = the Python token.
//
// Readiness: tail prints nothing when it has subscribed, so the manager's
// "sink subscribed" log record for tail's token (logged once the data queue
// is declared and bound) gates the Python source. Completeness: after the
// Python source has exited, a Go source sends one marker point (confirmed
// by the broker, so queued after every Python chunk); tail runs with -n
// COUNT+1 and must print the marker last, and the in-process sink must see
// nothing but the expected points before the marker.
func TestInteropPythonSourceReachesTail(t *testing.T) {
	py := python(t)
	url := testenv.URL(t)
	tail := buildTail(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	subscribed := make(chan string, 16)
	m := startManager(ctx, t, subscribed)

	prefix := "interop." + randomHex(4) + "."
	var (
		power  = prefix + "power"  // chunk_size 3
		manual = prefix + "manual" // chunk_size None
		dflt   = prefix + "dflt"   // the source's chunk_size, 2
		marker = prefix + "marker"
	)
	metrics := []string{power, manual, dflt}
	metadata := map[string]map[string]any{
		power: {"unit": "W", "description": "interop power", "rate": 10.5, "quantity": "power", "scope": "last",
			"custom": map[string]any{"nested": []any{1, "two", true, nil}}},
		manual: {"unit": "", "rate": 2, "description": "manually flushed"},
		dflt:   {},
	}
	want := map[string]*series{
		power:  {chunks: []int{3, 3, 1}},
		manual: {chunks: []int{5}},
		dflt:   {chunks: []int{2, 2, 1}},
	}
	t0 := int64(1_700_000_000_987_654_321)
	values := []float64{-1.25, math.NaN(), math.Copysign(0, -1), math.SmallestNonzeroFloat64, 1e300, 3, -4.5}
	for i := range 7 {
		want[power].points = append(want[power].points, pt(t0+int64(i)*100_000_001, values[i]))
	}
	for i := range 5 {
		want[manual].points = append(want[manual].points, pt(t0+int64(i)*7+3, float64(i)-2))
	}
	for i, v := range []float64{math.Inf(1), -7.5, math.Inf(-1), 1e-310, math.NaN()} {
		want[dflt].points = append(want[dflt].points, pt(4_102_444_800_000_000_001+int64(i), v))
	}
	var steps []planStep
	for i := range 7 {
		for _, metric := range metrics {
			if i < len(want[metric].points) {
				p := want[metric].points[i]
				steps = append(steps, planStep{Op: "send", Metric: metric, Time: p.Time, Bits: p.Bits})
			}
		}
	}
	steps = append(steps, planStep{Op: "flush"})
	planFile := filepath.Join(t.TempDir(), "plan.json")
	planJSON, err := json.Marshal(plan{
		ChunkSize: 2,
		Metrics: []planMetric{
			{Name: power, Metadata: metadata[power], ChunkSize: 3},
			{Name: manual, Metadata: metadata[manual], ChunkSize: nullChunk{}},
			{Name: dflt, Metadata: metadata[dflt]},
		},
		Steps: steps,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(planFile, planJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, s := range want {
		total += len(s.points)
	}

	// The in-process sink: Subscribe returns once subscribed.
	all := append(slices.Clone(metrics), marker)
	sub, err := manager.SubscribeWith(ctx, url, testenv.Token(t, "sink-interop-go"), all, manager.SubscribeOptions{Buffer: 1024})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer sub.Close()
	drainSubscribed(subscribed, sub.Token())

	// tail, gated on the manager's log.
	tailToken := testenv.Token(t, "sink-interop-tail")
	tailArgs := append([]string{"tail", "-token", tailToken, "-json", "-n", fmt.Sprint(total + 1), "-timeout", "55s", url}, all...)
	tailProc := start(ctx, t, tail, tailArgs...)
	waitSubscribed(ctx, t, subscribed, tailToken, tailProc)

	pyToken := testenv.Token(t, "source-interop-py")
	source := start(ctx, t, py, script(t, "py_source.py"), url, pyToken, planFile)
	source.wait(ctx)
	var events []string
	for line := range source.lines {
		events = append(events, event(t, line))
	}
	if !slices.Equal(events, []string{"declared", "sent", "stopped"}) {
		t.Errorf("py_source.py printed events %v", events)
	}

	// The marker, from a Go source, after the Python source has gone.
	markerPoint := pt(t0, 42)
	markerSrc, err := libmetricq.NewSource(url, testenv.Token(t, "source-interop-marker"), sourceLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer markerSrc.Stop(context.Background())
	if err := markerSrc.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if err := markerSrc.DeclareMetricList(ctx, []string{marker}); err != nil {
		t.Fatal(err)
	}
	if err := markerSrc.Send(ctx, marker, markerPoint.ts(), markerPoint.value()); err != nil {
		t.Fatal(err)
	}
	if err := markerSrc.Stop(ctx); err != nil {
		t.Fatalf("stop marker source: %v", err)
	}

	// The in-process sink.
	got := map[string]*series{}
	for _, metric := range metrics {
		got[metric] = &series{}
	}
collect:
	for {
		select {
		case c, ok := <-sub.Chunks():
			if !ok {
				t.Fatalf("subscription ended: %v", sub.Err())
			}
			if c.Metric == marker {
				if len(c.Points) != 1 || !same(pt(int64(c.Points[0].Time), c.Points[0].Value), markerPoint) {
					t.Errorf("Go sink: marker chunk %v", c.Points)
				}
				break collect
			}
			s, ok := got[c.Metric]
			if !ok {
				t.Errorf("Go sink: chunk of unexpected metric %q", c.Metric)
				continue
			}
			s.chunks = append(s.chunks, len(c.Points))
			for _, p := range c.Points {
				s.points = append(s.points, pt(int64(p.Time), p.Value))
			}
		case <-ctx.Done():
			t.Fatalf("Go sink: no marker: %v", ctx.Err())
		}
	}
	for _, metric := range metrics {
		comparePoints(t, "Go sink", metric, got[metric].points, want[metric].points)
		if !slices.Equal(got[metric].chunks, want[metric].chunks) {
			t.Errorf("Go sink: metric %s: points per message %v, want %v", metric, got[metric].chunks, want[metric].chunks)
		}
	}

	// tail: exactly total points, then the marker.
	tailProc.wait(ctx)
	tailGot := map[string][]jsonPoint{}
	var lines []jsonPoint
	for line := range tailProc.lines {
		var p jsonPoint
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil || p.Time == nil {
			t.Fatalf("tail printed %q: %v", line, err)
		}
		lines = append(lines, p)
	}
	if len(lines) != total+1 {
		t.Fatalf("tail printed %d points, want %d", len(lines), total+1)
	}
	if last := lines[len(lines)-1]; last.Metric != marker || *last.Time != markerPoint.Time || last.Value == nil || *last.Value != 42 {
		t.Errorf("tail's last point is not the marker: %+v", last)
	}
	for _, p := range lines[:total] {
		tailGot[p.Metric] = append(tailGot[p.Metric], p)
	}
	for _, metric := range metrics {
		var wantJSON []jsonPoint
		for _, p := range want[metric].points {
			wantJSON = append(wantJSON, toJSONPoint(metric, p))
		}
		if !reflect.DeepEqual(tailGot[metric], wantJSON) {
			t.Errorf("tail: metric %s:\n got %v\nwant %v", metric, fmtJSONPoints(tailGot[metric]), fmtJSONPoints(wantJSON))
		}
	}

	// The metadata the manager stored for the Python source's declaration.
	stored := m.Metadata()
	chunkSizes := map[string]any{power: 3.0, manual: nil, dflt: 2.0}
	for _, metric := range metrics {
		doc, ok := stored[metric]
		if !ok {
			t.Errorf("manager has no metadata for %s", metric)
			continue
		}
		if date, ok := doc["date"].(string); !ok || date == "" {
			t.Errorf("metadata of %s: date %v, want the manager's ISO time", metric, doc["date"])
		}
		wantDoc := jsonRoundTrip(t, metadata[metric])
		wantDoc["chunkSize"] = chunkSizes[metric]
		wantDoc["source"] = pyToken
		gotDoc := jsonRoundTrip(t, doc)
		delete(gotDoc, "date")
		if !reflect.DeepEqual(gotDoc, wantDoc) {
			t.Errorf("metadata of %s:\n got %v\nwant %v", metric, gotDoc, wantDoc)
		}
	}
}

// drainSubscribed consumes the manager's notice for token, sent during
// Subscribe.
func drainSubscribed(subscribed chan string, token string) {
	for {
		select {
		case got := <-subscribed:
			if got == token {
				return
			}
		default:
			return
		}
	}
}

// waitSubscribed waits until the manager has subscribed the sink token.
func waitSubscribed(ctx context.Context, t *testing.T, subscribed chan string, token string, p *proc) {
	t.Helper()
	for {
		select {
		case got := <-subscribed:
			if got == token {
				return
			}
		case <-p.done:
			t.Fatalf("%s exited (%v) before subscribing: %s", p.name, p.err, p.stderr.String())
		case <-ctx.Done():
			t.Fatalf("%s did not subscribe: %v; stderr:\n%s", p.name, ctx.Err(), p.stderr.String())
		}
	}
}

// jsonPoint is a line of "tail -json".
type jsonPoint struct {
	Metric string   `json:"metric"`
	Time   *int64   `json:"time"`
	Value  *float64 `json:"value"`
}

func toJSONPoint(metric string, p point) jsonPoint {
	tm := p.Time
	jp := jsonPoint{Metric: metric, Time: &tm}
	if v := p.value(); !math.IsNaN(v) && !math.IsInf(v, 0) {
		jp.Value = &v
	}
	return jp
}

func fmtJSONPoints(ps []jsonPoint) string {
	var parts []string
	for _, p := range ps {
		v := "null"
		if p.Value != nil {
			v = fmt.Sprint(*p.Value)
		}
		parts = append(parts, fmt.Sprintf("(%d, %s)", *p.Time, v))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func jsonRoundTrip(t *testing.T, v any) map[string]any {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	if out == nil {
		out = map[string]any{}
	}
	return out
}

// pyClientResult is what py_client.py prints.
type pyClientResult struct {
	Event    string `json:"event"`
	Discover []struct {
		Reply          map[string]json.RawMessage `json:"reply"`
		Types          map[string]string          `json:"types"`
		CurrentTimeNs  json.RawMessage            `json:"currentTime_ns"`
		StartingTimeNs json.RawMessage            `json:"startingTime_ns"`
	} `json:"discover"`
	Config  []rpcOutcome `json:"config"`
	Unknown rpcOutcome   `json:"unknown"`
}

type rpcOutcome struct {
	Reply     map[string]json.RawMessage `json:"reply"`
	FromToken string                     `json:"from_token"`
	Error     *string                    `json:"error"`
}

// TestInteropPythonDiscoverAndConfig: a reference metricq.Client broadcasts
// "discover" and sends direct "config" RPCs (as metricq-discover and the
// wizard do) to a Go Source. The Go source must answer discover with the
// reference's fields and types (uptime an integer of ns, times Python can
// parse, metricqVersion libmetricq/0.1.0), config with {} after handing the
// configuration to its handler, a failing config handler with an error
// reply, and an unknown function with the reference's error text.
func TestInteropPythonDiscoverAndConfig(t *testing.T) {
	py := python(t)
	url := testenv.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	startManager(ctx, t, nil)

	configs := make(chan map[string]any, 8)
	goToken := testenv.Token(t, "source-interop-rpc")
	src, err := libmetricq.NewSource(url, goToken, sourceLog(t),
		libmetricq.WithClientVersion("interop-test/1.2.3"),
		libmetricq.WithConfigHandler(func(_ context.Context, _ *libmetricq.Source, config map[string]any) error {
			configs <- config
			if config["fail"] == true {
				return errors.New("interop: refusing this configuration")
			}
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Stop(context.Background())
	before := time.Now()
	if err := src.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case initial := <-configs: // from the register reply
		if initial["_id"] != goToken {
			t.Errorf("initial config %v: want _id %s", initial, goToken)
		}
	default:
		t.Fatal("the config handler was not called during Connect")
	}

	pushed := `{"_id": "` + goToken + `", "_rev": "2-abc", "rate": 12.5, "big": 9007199254740993,` +
		` "nested": {"list": [1, "x", null, true]}, "name": "\u00fcn\u00efcode"}`
	configFile := filepath.Join(t.TempDir(), "configs.json")
	if err := os.WriteFile(configFile, []byte(`[`+pushed+`, {"fail": true}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	client := start(ctx, t, py, script(t, "py_client.py"), url, testenv.Token(t, "client-interop"), goToken, configFile)
	line := client.next(ctx, "the result line")
	client.wait(ctx)
	var res pyClientResult
	if err := json.Unmarshal(line, &res); err != nil || res.Event != "result" {
		t.Fatalf("py_client.py printed %s: %v", line, err)
	}

	// discover
	if len(res.Discover) != 1 {
		t.Fatalf("Python got %d discover replies from the Go source, want 1: %s", len(res.Discover), line)
	}
	d := res.Discover[0]
	wantTypes := map[string]string{"alive": "bool", "currentTime": "str", "startingTime": "str", "uptime": "int",
		"metricqVersion": "str", "hostname": "str", "version": "str"}
	if !reflect.DeepEqual(d.Types, wantTypes) {
		t.Errorf("discover reply keys and Python types: %v, want %v", d.Types, wantTypes)
	}
	host, _ := os.Hostname()
	for key, want := range map[string]string{"alive": "true", "metricqVersion": `"libmetricq/0.1.0"`,
		"version": `"interop-test/1.2.3"`, "hostname": mustJSON(t, host)} {
		if got := string(d.Reply[key]); got != want {
			t.Errorf("discover %s = %s, want %s", key, got, want)
		}
	}
	var uptime, current, starting int64
	if err := json.Unmarshal(d.Reply["uptime"], &uptime); err != nil || uptime < 0 {
		t.Errorf("discover uptime = %s, want a non-negative integer of ns: %v", d.Reply["uptime"], err)
	}
	if err := json.Unmarshal(d.CurrentTimeNs, &current); err != nil {
		t.Errorf("Python cannot parse currentTime %s: %s", d.Reply["currentTime"], d.CurrentTimeNs)
	}
	if err := json.Unmarshal(d.StartingTimeNs, &starting); err != nil {
		t.Errorf("Python cannot parse startingTime %s: %s", d.Reply["startingTime"], d.StartingTimeNs)
	}
	if current != 0 && starting != 0 {
		if starting < before.Add(-time.Second).UnixNano() || starting > current || current > time.Now().UnixNano() {
			t.Errorf("discover times out of order: test start %d, startingTime %d, currentTime %d, now %d",
				before.UnixNano(), starting, current, time.Now().UnixNano())
		}
		// Both times have microseconds (Python's isoformat); uptime is
		// computed from the exact ns values.
		if diff := uptime - (current - starting); diff < -2000 || diff > 2000 {
			t.Errorf("uptime %d ns, but currentTime - startingTime = %d ns", uptime, current-starting)
		}
	}

	// config
	if len(res.Config) != 2 {
		t.Fatalf("py_client.py: %d config results", len(res.Config))
	}
	if ok := res.Config[0]; ok.Error != nil || len(ok.Reply) != 0 || ok.FromToken != goToken {
		t.Errorf("config RPC: reply %v, error %v, from %q; want {} from %s", ok.Reply, deref(ok.Error), ok.FromToken, goToken)
	}
	if bad := res.Config[1]; bad.Error == nil || !strings.Contains(*bad.Error, "interop: refusing this configuration") {
		t.Errorf("config RPC with a failing handler: reply %v, error %v; want the handler's error", bad.Reply, deref(bad.Error))
	}
	select {
	case got := <-configs:
		want := map[string]any{"_id": goToken, "_rev": "2-abc", "rate": json.Number("12.5"),
			"big": json.Number("9007199254740993"), "nested": map[string]any{"list": []any{json.Number("1"), "x", nil, true}},
			"name": "ünïcode"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("config handler got %#v,\nwant %#v", got, want)
		}
	default:
		t.Error("the config handler was not called for the config RPC")
	}

	// unknown function
	if res.Unknown.Error == nil || *res.Unknown.Error != "'Missing rpc handler for interop.nonexistent'" {
		t.Errorf("unknown RPC: reply %v, error %v; want the reference's \"'Missing rpc handler for interop.nonexistent'\"",
			res.Unknown.Reply, deref(res.Unknown.Error))
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}
