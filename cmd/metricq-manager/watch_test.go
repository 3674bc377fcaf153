package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

func TestTopicMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, key string
		want         bool
	}{
		{"#", "a", true}, {"#", "a.b.c", true}, {"a.#", "a", true}, {"a.#", "a.b.c", true},
		{"a.#", "b.a", false}, {"a.*", "a.b", true}, {"a.*", "a", false}, {"a.*", "a.b.c", false},
		{"*.b.#", "a.b", true}, {"a.#.c", "a.c", true}, {"a.#.c", "a.x.y.c", true}, {"a.#.c", "a.x.y", false},
		{"a.b", "a.b", true}, {"a.b", "a.bc", false},
	} {
		if got := topicMatch(c.pattern, c.key); got != c.want {
			t.Errorf("topicMatch(%q, %q) = %v", c.pattern, c.key, got)
		}
	}
}

func TestThin(t *testing.T) {
	pts := make([]libmetricq.Point, 1000)
	for i := range pts {
		pts[i] = libmetricq.Point{Time: libmetricq.Timestamp(i), Value: float64(i)}
	}
	got := thin(pts, 25)
	if len(got) != 25 || got[24].Value != 999 || got[0].Value != 39 {
		t.Errorf("thin: %d points, first %v, last %v", len(got), got[0], got[len(got)-1])
	}
	if got := thin(pts[:3], 25); len(got) != 3 {
		t.Errorf("thin of 3: %d points", len(got))
	}
}

func TestBoardKeepsPointsForTheView(t *testing.T) {
	b := newBoard([]string{"#"}, true)
	big := make([]libmetricq.Point, freshCap+10)
	for i := range big {
		big[i] = libmetricq.Point{Time: libmetricq.Timestamp(i) * 1e6, Value: float64(i)}
	}
	b.add("m", big[:100])
	b.add("m", big)
	if got := b.counts()["m"]; got != uint64(100+len(big)) {
		t.Errorf("count %d", got)
	}
	fresh := b.takeFresh()["m"]
	if len(fresh) != flushPoints || fresh[len(fresh)-1].Value != float64(len(big)-1) {
		t.Errorf("fresh: %d points, last %v", len(fresh), fresh[len(fresh)-1])
	}
	if h := b.history()["m"]; len(h) != flushPoints {
		t.Errorf("history: %d points", len(h))
	}
	if b.takeFresh() != nil {
		t.Error("fresh points twice")
	}
	b.setMetadata(map[string]map[string]any{"m": {"unit": "V"}, "other": {"unit": "A"}})
	snap := b.snapshot()
	if len(snap.Metrics) != 2 || !snap.Metrics[0].Declared || snap.Metrics[0].Metadata["unit"] != "V" || snap.Metrics[1].Count != 0 {
		t.Errorf("snapshot %+v", snap)
	}
	// Only declared metrics matching the bindings are listed.
	b2 := newBoard([]string{"a.*"}, false)
	b2.setMetadata(map[string]map[string]any{"a.x": {}, "b.x": {}})
	if got := b2.snapshot().Metrics; len(got) != 1 || got[0].Name != "a.x" {
		t.Errorf("bindings ignored: %+v", got)
	}
}

func TestReadReports(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go", "a.b 10\n# comment\n\nc.d 0\n")
	write("c", "a.b 5\nbad line here\n")
	write("x.tmp", "a.b 1000\n")
	write(".hidden", "a.b 1000\n")
	sent, err := readReports(dir)
	if err == nil || !strings.Contains(err.Error(), `report c line 2`) {
		t.Errorf("error %v", err)
	}
	if len(sent) != 2 || sent["a.b"] != 15 || sent["c.d"] != 0 {
		t.Errorf("sent %v", sent)
	}
}

func TestSummarize(t *testing.T) {
	snap := boardSnapshot{Points: 30, Metrics: []metricRow{
		{Name: "ok", Declared: true, Count: 10},
		{Name: "lost", Declared: true, Count: 5},
		{Name: "extra", Count: 12},
		{Name: "silent", Declared: true},
		{Name: "unreported", Count: 3},
	}}
	sent := map[string]uint64{"ok": 10, "lost": 8, "extra": 11, "missing": 4, "zero": 0}
	s := summarize(snap, sent, true, 2*time.Second)
	want := map[string]string{
		"ok": "ok", "lost": "LOST 3", "extra": "ok, 1 extra", "silent": "NO DATA", "unreported": "ok (sender did not report)",
		"missing": "MISSING", "zero": "nothing sent",
	}
	if len(s.Metrics) != len(want) {
		t.Fatalf("%d rows: %+v", len(s.Metrics), s.Metrics)
	}
	for _, r := range s.Metrics {
		if r.Status != want[r.Metric] {
			t.Errorf("%s: status %q, want %q", r.Metric, r.Status, want[r.Metric])
		}
	}
	if s.OK || len(s.Problems) != 3 {
		t.Errorf("ok %v, problems %q", s.OK, s.Problems)
	}
	var out bytes.Buffer
	s.print(&out)
	if !strings.Contains(out.String(), "  missing             4          0  MISSING\n") || !strings.Contains(out.String(), "PROBLEMS:") {
		t.Errorf("printed:\n%s", out.String())
	}
	if s := summarize(boardSnapshot{}, nil, false, time.Second); s.OK {
		t.Error("an empty summary is OK")
	}
}

func TestFormatValue(t *testing.T) {
	for _, c := range []struct {
		v    float64
		unit string
		want string
	}{
		{0.5, "", "0.5"}, {24_630_000_000, "B", "24.63 GB"}, {123_456, "", "123.5 k"}, {3, "°C", "3 °C"},
		{math.NaN(), "", "NaN"}, {-1.5e-7, "V", "-1.5e-07 V"},
	} {
		if got := formatValue(c.v, c.unit); got != c.want {
			t.Errorf("formatValue(%v, %q) = %q, want %q", c.v, c.unit, got, c.want)
		}
	}
}

func TestWatchUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"-http", "nonsense", "amqp://h/"}, {"-refresh", "0s", "amqp://h/"}, {"-duration", "-1s", "amqp://h/"}} {
		var stdout, stderr bytes.Buffer
		if code := runWatch(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit code %d, want 2 (%s)", args, code, stderr.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"tail", "-http", "nonsense", "amqp://h/", "m"}, &stdout, &stderr); code != 2 {
		t.Errorf("tail -http nonsense: exit code %d", code)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader in parallel.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// artifactDir is build/test-artifacts, where tests leave files to look at.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(testenv.Root(t), "build", "test-artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func startTestManager(t *testing.T) string {
	t.Helper()
	testenv.ExclusiveVhost(t)
	url := testenv.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := manager.Start(ctx, manager.Config{URL: url, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("start manager: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return url
}

// waitFor polls cond every 50 ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func getSnapshot(t *testing.T, pageURL string) boardSnapshot {
	t.Helper()
	resp, err := http.Get(pageURL + "api/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s boardSnapshot
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("/api/metrics: %v", err)
	}
	return s
}

// TestWatchBrowser runs watch -http with a source sending two metrics and
// loads the page in headless Chromium: it must list the metrics with their
// metadata and chart the points that arrive by server-sent events. It
// leaves build/test-artifacts/watch.png (and watch.html, the DOM).
func TestWatchBrowser(t *testing.T) {
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "chromium"
	}
	if _, err := exec.LookPath(chromium); err != nil {
		t.Fatalf("%s not found: this test needs headless Chromium; install it with scripts/ensure-tools.sh chromium (or set $CHROMIUM)", chromium)
	}
	url := startTestManager(t)
	ready := filepath.Join(t.TempDir(), "ready")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	rc := make(chan int, 1)
	go func() {
		rc <- runWatch(ctx, []string{"-http", "127.0.0.1:0", "-ready", ready, "-title", "browser test",
			"-token", testenv.Token(t, "sink-watch"), url, "browser.#"}, &stdout, &stderr)
	}()
	var pageURL string
	waitFor(t, 15*time.Second, "watch to subscribe", func() bool {
		select {
		case code := <-rc:
			t.Fatalf("watch exited with %d: %s", code, stderr.String())
		default:
		}
		raw, err := os.ReadFile(ready)
		pageURL = strings.TrimSpace(string(raw))
		return err == nil && pageURL != ""
	})
	if !strings.HasPrefix(pageURL, "http://127.0.0.1:") {
		t.Fatalf("ready file holds %q", pageURL)
	}

	src, err := libmetricq.NewSource(url, testenv.Token(t, "source-browser"), libmetricq.WithChunkSize(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer src.Stop(context.Background())
	metrics := map[string]libmetricq.Metadata{
		"browser.test.sine": {"unit": "V", "rate": 20.0, "description": "a test sine"},
		"browser.test.ramp": {"unit": "s", "rate": 20.0, "description": "a test ramp"},
	}
	if err := src.DeclareMetrics(ctx, metrics); err != nil {
		t.Fatal(err)
	}
	sending := make(chan struct{})
	go func() {
		defer close(sending)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			now := libmetricq.Now()
			_ = src.Send(ctx, "browser.test.sine", now, math.Sin(float64(i)/5))
			_ = src.Send(ctx, "browser.test.ramp", now, float64(i%40)/4)
		}
	}()
	waitFor(t, 15*time.Second, "points and metadata in /api/metrics", func() bool {
		s := getSnapshot(t, pageURL)
		n := 0
		for _, m := range s.Metrics {
			if metrics[m.Name] != nil && m.Declared && m.Count >= 10 {
				n++
			}
		}
		return n == len(metrics)
	})

	artifacts := artifactDir(t)
	shot := filepath.Join(artifacts, "watch.png")
	os.Remove(shot)
	cctx, ccancel := context.WithTimeout(ctx, 60*time.Second)
	defer ccancel()
	// The page stops listening after 8 updates (?events=8): Chromium's
	// virtual time only advances, and the DOM is dumped, once no request is
	// pending.
	cmd := exec.CommandContext(cctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir="+t.TempDir(), "--window-size=1200,900",
		"--virtual-time-budget=3000", "--screenshot="+shot, "--dump-dom", pageURL+"?events=8")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var chromeErr bytes.Buffer
	cmd.Stderr = &chromeErr
	dom, err := cmd.Output()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // helpers it may leave
	}
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, tail(chromeErr.String(), 2000))
	}
	if err := os.WriteFile(filepath.Join(artifacts, "watch.html"), dom, 0o644); err != nil {
		t.Fatal(err)
	}
	page := string(dom)
	body := regexp.MustCompile(`<body[^>]*>`).FindString(page)
	if !strings.Contains(body, `data-state="paused"`) || attr(body, "data-events") < 8 {
		t.Errorf("the page did not receive 8 updates: %s", body)
	}
	for name, md := range metrics {
		section := regexp.MustCompile(`<section[^>]*data-metric="` + regexp.QuoteMeta(name) + `"[^>]*>`).FindString(page)
		if section == "" {
			t.Errorf("%s is not listed on the page", name)
			continue
		}
		if strings.Contains(section, "undeclared") {
			t.Errorf("%s is shown without its metadata: %s", name, section)
		}
		if n := attr(section, "data-chart-points"); n < 10 {
			t.Errorf("%s: the chart has %d points: %s", name, n, section)
		}
		if n := attr(section, "data-count"); n < 10 {
			t.Errorf("%s: the count is %d", name, n)
		}
		if !strings.Contains(page, md["description"].(string)) {
			t.Errorf("the description of %s is missing", name)
		}
		if !strings.Contains(page, `<li data-key="unit"><span>unit: </span>`+md["unit"].(string)+`</li>`) {
			t.Errorf("the unit of %s is missing", name)
		}
	}
	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) || len(png) < 20_000 {
		t.Errorf("screenshot %s: %d bytes, %v", shot, len(png), err)
	}
	t.Logf("screenshot: %s", shot)

	cancel()
	<-sending
	select {
	case code := <-rc:
		if code != 0 {
			t.Errorf("watch exited with %d: %s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("watch did not stop")
	}
	out := stdout.String()
	if !strings.Contains(out, "live view: "+pageURL) || !regexp.MustCompile(`browser\.test\.sine +- +\d+  ok\n`).MatchString(out) {
		t.Errorf("watch output:\n%s", out)
	}
}

// attr returns an integer attribute of an HTML start tag, -1 if absent.
func attr(tag, name string) int {
	m := regexp.MustCompile(` ` + name + `="(\d+)"`).FindStringSubmatch(tag)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// TestTailHTTP: tail -http serves the same view while printing points.
func TestTailHTTP(t *testing.T) {
	url := startTestManager(t)
	var stdout, stderr syncBuffer
	rc := make(chan int, 1)
	go func() {
		rc <- run([]string{"tail", "-http", "127.0.0.1:0", "-n", "5", "-timeout", "20s", url, "tailhttp.#"}, &stdout, &stderr)
	}()
	var pageURL string
	re := regexp.MustCompile(`live view at (http://\S+/)`)
	waitFor(t, 15*time.Second, "tail's live view", func() bool {
		m := re.FindStringSubmatch(stderr.String())
		if m != nil {
			pageURL = m[1]
		}
		return m != nil
	})
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	publish := func(n int) {
		for i := range n {
			body := libmetricq.EncodeDataChunk([]libmetricq.Point{{Time: libmetricq.Now(), Value: float64(i)}})
			if err := ch.Publish(amqpkit.DataExchange, "tailhttp.x", false, false, amqp.Publishing{Body: body}); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(3)
	waitFor(t, 10*time.Second, "3 points in /api/metrics", func() bool {
		s := getSnapshot(t, pageURL)
		return len(s.Metrics) == 1 && s.Metrics[0].Name == "tailhttp.x" && s.Metrics[0].Count == 3
	})
	resp, err := http.Get(pageURL)
	if err != nil {
		t.Fatal(err)
	}
	var page bytes.Buffer
	_, _ = page.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(page.String(), `<script src="app.js"></script>`) {
		t.Errorf("page:\n%s", page.String())
	}
	publish(2)
	select {
	case code := <-rc:
		if code != 0 || strings.Count(stdout.String(), "\n") != 5 {
			t.Errorf("exit code %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("tail did not exit")
	}
}

// TestDemo runs scripts/demo.sh (what make demo runs) for a few seconds
// against the test vhost: every metric of the examples must arrive, and as
// many points as their sources say they sent.
func TestDemo(t *testing.T) {
	url := testenv.URL(t)
	testenv.ExclusiveVhost(t) // the demo starts a manager on the vhost
	root := testenv.Root(t)
	dir := t.TempDir()
	summaryFile := filepath.Join(dir, "summary.json")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "demo.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "DEMO_URL="+url, "DEMO_SECONDS=5", "DEMO_DIR="+dir,
		"DEMO_SUMMARY="+summaryFile, "DEMO_HTTP=127.0.0.1:0")
	// On timeout the script stops what it started (its EXIT trap).
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("demo took %s", time.Since(start).Round(100*time.Millisecond))
	if err != nil {
		logs, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
		for _, l := range logs {
			raw, _ := os.ReadFile(l)
			t.Logf("%s:\n%s", filepath.Base(l), tail(string(raw), 3000))
		}
		t.Fatalf("scripts/demo.sh: %v\n%s", err, out.String())
	}
	raw, err := os.ReadFile(summaryFile)
	if err != nil {
		t.Fatalf("no summary: %v\n%s", err, out.String())
	}
	var sum summary
	if err := json.Unmarshal(raw, &sum); err != nil {
		t.Fatal(err)
	}
	got := make(map[string]summaryRow)
	for _, r := range sum.Metrics {
		got[r.Metric] = r
		if r.Received == 0 {
			t.Errorf("%s: nothing received", r.Metric)
		}
		if r.Sent != nil && *r.Sent != r.Received {
			t.Errorf("%s: %d points sent, %d received", r.Metric, *r.Sent, r.Received)
		}
	}
	for _, m := range []string{"example.go.sine", "example.go.sysinfo.load1", "example.go.sysinfo.mem_available", "example.go.sysinfo.sine"} {
		if r, ok := got[m]; !ok || r.Sent == nil || !r.Declared {
			t.Errorf("%s: missing from the summary, or without its sender's report: %+v", m, r)
		}
	}
	if !sum.OK || !strings.Contains(out.String(), "OK: every metric arrived.") {
		t.Errorf("summary not OK:\n%s", out.String())
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("demo output:\n%s", out.String())
	}
}
