package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
	"github.com/libmetricq/libmetricq/internal/manager"
)

const watchUsage = `Usage: metricq-manager watch [flags] URL [METRIC...]
Subscribes through the MetricQ manager (one must run) and shows per metric
the points received, the arrival rate and the latest value, redrawn in place
on a terminal (one line per refresh otherwise). Ends after -duration or on
SIGINT/SIGTERM and prints a summary. METRIC is an AMQP topic binding key;
the default "#" is everything.

With -http, a page on that address lists the declared metrics with their
metadata and charts each live (server-sent events at /events, JSON at
/api/metrics).

With -reports DIR, the summary compares what arrived with what the sources
say they sent: every file in DIR holds lines "<metric> <points sent>" (the
convention of the examples: they write $METRICQ_DEMO_REPORT when they stop).

Flags:
`

// watchOptions are watch's flags.
type watchOptions struct {
	token    string
	duration time.Duration
	refresh  time.Duration
	httpAddr string
	summary  string
	reports  string
	drain    time.Duration
	check    bool
	ready    string
	title    string
}

func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("metricq-manager watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o watchOptions
	fs.StringVar(&o.token, "token", "", "sink token (default sink-metricq-watch.<random hex>)")
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long (0: on SIGINT/SIGTERM)")
	fs.DurationVar(&o.refresh, "refresh", time.Second, "redraw interval")
	fs.StringVar(&o.httpAddr, "http", "", "serve the browser view on `[HOST]:PORT` (host defaults to 127.0.0.1; port 0 picks one)")
	fs.StringVar(&o.summary, "summary", "", "also write the summary as JSON to `FILE`")
	fs.StringVar(&o.reports, "reports", "", "`DIR` of files \"<metric> <points sent>\", read when stopping and compared in the summary")
	fs.DurationVar(&o.drain, "drain", 5*time.Second, "when stopping, wait up to this long for points still on their way (until every reported point arrived; without -reports until 300 ms pass without data)")
	fs.BoolVar(&o.check, "check", false, "exit 1 unless every metric (declared or reported) received points and none reported sent went missing")
	fs.StringVar(&o.ready, "ready", "", "once subscribed, write the view's URL (or \"ready\") to `FILE`")
	fs.StringVar(&o.title, "title", "MetricQ live view", "title of the terminal table and the page")
	fs.Usage = func() {
		fmt.Fprint(stderr, watchUsage)
		fs.PrintDefaults()
	}
	if status, done := parseArgs(fs, args, stderr, func(n int) bool { return n >= 1 }, "metricq-manager watch: need the broker URL"); done {
		return status
	}
	if o.duration < 0 || o.refresh <= 0 || o.drain < 0 {
		fmt.Fprintln(stderr, "metricq-manager watch: -duration and -drain must not be negative, -refresh must be positive")
		return 2
	}
	url, bindings := fs.Arg(0), fs.Args()[1:]
	if len(bindings) == 0 {
		bindings = []string{"#"}
	}
	if o.token == "" {
		o.token = randomToken("sink-metricq-watch.")
	}
	if o.httpAddr != "" {
		if _, err := listenAddress(o.httpAddr); err != nil {
			fmt.Fprintf(stderr, "metricq-manager watch: %v\n", err)
			return 2
		}
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "metricq-manager watch: %v\n", err)
		return 1
	}

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	sub, err := manager.SubscribeWith(setupCtx, url, o.token, bindings, manager.SubscribeOptions{Logger: log, Buffer: 256})
	cancel()
	if err != nil {
		return fail(err)
	}
	defer sub.Close()
	mon, err := startMonitor(url, o.token, bindings, o.httpAddr, o.title, log, stderr)
	if err != nil {
		return fail(err)
	}
	defer mon.close()
	viewURL := ""
	if mon.web != nil {
		viewURL = mon.web.URL()
	}
	if o.ready != "" {
		content := viewURL
		if content == "" {
			content = "ready"
		}
		if err := writeFileAtomic(o.ready, []byte(content+"\n")); err != nil {
			return fail(err)
		}
	}

	scr := &screen{w: stdout, ansi: isTerminal(stdout)}
	if !scr.ansi && viewURL != "" {
		fmt.Fprintf(stdout, "live view: %s\n", viewURL)
	}
	header := func(elapsed time.Duration) []string {
		lines := []string{fmt.Sprintf("%s — %s", o.title, elapsed.Round(time.Second))}
		line := "broker " + amqpkit.RedactURL(url) + "  metrics " + strings.Join(bindings, " ")
		if viewURL != "" {
			line += "  view " + viewURL
		}
		return append(lines, line)
	}
	var end <-chan time.Time
	if o.duration > 0 {
		timer := time.NewTimer(o.duration)
		defer timer.Stop()
		end = timer.C
	}
	refresh := time.NewTicker(o.refresh)
	defer refresh.Stop()
	start := time.Now()
	var lost error
watching:
	for {
		select {
		case chunk, ok := <-sub.Chunks():
			if !ok {
				lost = sub.Err()
				break watching
			}
			mon.add(chunk.Metric, chunk.Points)
		case <-refresh.C:
			scr.draw(mon.board.snapshot(), header(time.Since(start)))
		case <-end:
			break watching
		case <-ctx.Done():
			break watching
		}
	}
	elapsed := time.Since(start)

	// Points published just before the end are still on their way: wait for
	// them (the reports say how many) before counting.
	var sent map[string]uint64
	if o.reports != "" {
		sent, err = readReports(o.reports)
		if err != nil {
			fmt.Fprintf(stderr, "warning: %v\n", err)
		}
	}
	if lost == nil {
		lost = drain(sub, mon, sent, o.drain)
	}
	mon.pollMetadata() // metrics declared too late for the last poll
	mon.close()
	snap := mon.board.snapshot()
	if scr.ansi {
		scr.draw(snap, header(elapsed)) // the final counts; plain output has them in the summary
	}

	sum := summarize(snap, sent, o.reports != "", elapsed)
	sum.print(stdout)
	if o.summary != "" {
		raw, _ := json.MarshalIndent(sum, "", "  ")
		if err := writeFileAtomic(o.summary, append(raw, '\n')); err != nil {
			fmt.Fprintf(stderr, "metricq-manager watch: %v\n", err)
			return 1
		}
	}
	if lost != nil {
		return fail(lost)
	}
	if o.check && !sum.OK {
		return 1
	}
	return 0
}

// drain keeps receiving until every reported point arrived (or, without
// reports, until 300 ms pass without data) or max passes. It returns the
// subscription's error if its connection was lost meanwhile.
func drain(sub *manager.Subscription, mon *monitor, sent map[string]uint64, max time.Duration) error {
	deadline := time.NewTimer(max)
	defer deadline.Stop()
	const quiet = 300 * time.Millisecond
	idle := time.NewTimer(quiet)
	defer idle.Stop()
	complete := func() bool {
		got := mon.board.counts()
		for metric, n := range sent {
			if got[metric] < n {
				return false
			}
		}
		return true
	}
	for {
		if sent != nil && complete() {
			return nil
		}
		select {
		case chunk, ok := <-sub.Chunks():
			if !ok {
				return sub.Err()
			}
			mon.add(chunk.Metric, chunk.Points)
			if sent == nil {
				idle.Reset(quiet)
			}
		case <-idle.C:
			if sent == nil {
				return nil
			}
		case <-deadline.C:
			return nil
		}
	}
}

// readReports reads the senders' reports: every file in dir (except hidden
// and *.tmp ones) has lines "<metric> <points sent>"; blank lines and lines
// starting with "#" are ignored. A metric in several files is summed.
func readReports(dir string) (map[string]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reports: %w", err)
	}
	sent := make(map[string]uint64)
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".tmp") {
			continue
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sc := bufio.NewScanner(f)
		for line := 1; sc.Scan(); line++ {
			text := strings.TrimSpace(sc.Text())
			if text == "" || strings.HasPrefix(text, "#") {
				continue
			}
			fields := strings.Fields(text)
			var n uint64
			if len(fields) == 2 {
				n, err = strconv.ParseUint(fields[1], 10, 64)
			}
			if len(fields) != 2 || err != nil {
				errs = append(errs, fmt.Errorf("report %s line %d: want \"<metric> <points sent>\", got %q", name, line, text))
				continue
			}
			sent[fields[0]] += n
		}
		if err := sc.Err(); err != nil {
			errs = append(errs, fmt.Errorf("report %s: %w", name, err))
		}
		f.Close()
	}
	return sent, errors.Join(errs...)
}

// summary is what watch prints at the end (and writes with -summary).
type summary struct {
	Seconds  float64      `json:"seconds"`
	Points   uint64       `json:"points"` // received, all metrics
	Metrics  []summaryRow `json:"metrics"`
	OK       bool         `json:"ok"`
	Problems []string     `json:"problems"`
}

type summaryRow struct {
	Metric   string  `json:"metric"`
	Declared bool    `json:"declared"`
	Sent     *uint64 `json:"sent"` // null: the sender did not report
	Received uint64  `json:"received"`
	Status   string  `json:"status"`
	OK       bool    `json:"ok"`
}

func summarize(snap boardSnapshot, sent map[string]uint64, withReports bool, elapsed time.Duration) summary {
	s := summary{Seconds: elapsed.Seconds(), Points: snap.Points, OK: true, Problems: []string{}}
	rows := make(map[string]*summaryRow)
	for _, m := range snap.Metrics {
		rows[m.Name] = &summaryRow{Metric: m.Name, Declared: m.Declared, Received: m.Count}
	}
	for metric, n := range sent {
		r := rows[metric]
		if r == nil {
			r = &summaryRow{Metric: metric}
			rows[metric] = r
		}
		r.Sent = &n
	}
	for _, r := range rows {
		r.OK = true
		switch {
		case r.Sent == nil && r.Received > 0:
			r.Status = "ok"
			if withReports {
				r.Status = "ok (sender did not report)"
			}
		case r.Sent == nil:
			r.Status, r.OK = "NO DATA", false
			s.Problems = append(s.Problems, fmt.Sprintf("%s: declared, but no points arrived", r.Metric))
		case *r.Sent == 0 && r.Received == 0:
			r.Status = "nothing sent"
		case r.Received == 0:
			r.Status, r.OK = "MISSING", false
			s.Problems = append(s.Problems, fmt.Sprintf("%s: %d points sent, none arrived", r.Metric, *r.Sent))
		case r.Received < *r.Sent:
			r.Status, r.OK = fmt.Sprintf("LOST %d", *r.Sent-r.Received), false
			s.Problems = append(s.Problems, fmt.Sprintf("%s: %d of %d points arrived", r.Metric, r.Received, *r.Sent))
		case r.Received > *r.Sent:
			r.Status = fmt.Sprintf("ok, %d extra", r.Received-*r.Sent) // republished after a reconnect
		default:
			r.Status = "ok"
		}
		if !r.OK {
			s.OK = false
		}
		s.Metrics = append(s.Metrics, *r)
	}
	sort.Slice(s.Metrics, func(i, j int) bool { return s.Metrics[i].Metric < s.Metrics[j].Metric })
	sort.Strings(s.Problems)
	if len(s.Metrics) == 0 {
		s.OK = false
		s.Problems = append(s.Problems, "no metric was declared or received")
	}
	return s
}

func (s summary) print(w io.Writer) {
	width := len("METRIC")
	for _, r := range s.Metrics {
		width = max(width, len(r.Metric))
	}
	fmt.Fprintf(w, "\nSummary after %.1f s: %d points received in %d metrics\n", s.Seconds, s.Points, len(s.Metrics))
	fmt.Fprintf(w, "  %-*s %10s %10s  %s\n", width, "METRIC", "SENT", "RECEIVED", "STATUS")
	for _, r := range s.Metrics {
		sent := "-"
		if r.Sent != nil {
			sent = strconv.FormatUint(*r.Sent, 10)
		}
		fmt.Fprintf(w, "  %-*s %10s %10d  %s\n", width, r.Metric, sent, r.Received, r.Status)
	}
	if s.OK {
		fmt.Fprintln(w, "OK: every metric arrived.")
		return
	}
	fmt.Fprintln(w, "PROBLEMS:")
	for _, p := range s.Problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
}

// screen draws the table: redrawn in place on a terminal, one line per
// refresh otherwise.
type screen struct {
	w     io.Writer
	ansi  bool
	lines int // drawn last time
}

// maxRows is how many metrics the terminal table shows.
const maxRows = 40

func (s *screen) draw(snap boardSnapshot, header []string) {
	if !s.ansi {
		var b strings.Builder
		fmt.Fprintf(&b, "[%4.0fs] %d points, %d metrics", snap.Elapsed, snap.Points, len(snap.Metrics))
		for i, m := range snap.Metrics {
			if i == 0 {
				b.WriteString(":")
			} else {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, " %s %d", m.Name, m.Count)
		}
		fmt.Fprintln(s.w, b.String())
		return
	}
	lines := append([]string(nil), header...)
	lines = append(lines, "")
	width := len("METRIC")
	for _, m := range snap.Metrics {
		width = max(width, min(len(m.Name), 60))
	}
	bold := len(lines)
	lines = append(lines, fmt.Sprintf("%-*s %10s %10s  %-18s %s", width, "METRIC", "COUNT", "RATE/s", "LATEST", "AGE"))
	for i, m := range snap.Metrics {
		if i == maxRows {
			lines = append(lines, fmt.Sprintf("… and %d more", len(snap.Metrics)-maxRows))
			break
		}
		latest, age := "-", ""
		if m.LastValue != nil {
			unit, _ := m.Metadata["unit"].(string)
			latest = formatValue(float64(*m.LastValue), unit)
			age = fmt.Sprintf("%.1fs ago", *m.Age)
		}
		name := m.Name
		if len(name) > width {
			name = name[:width-1] + "…"
		}
		lines = append(lines, fmt.Sprintf("%-*s %10d %10.1f  %-18s %s", width, name, m.Count, float64(m.Rate), latest, age))
	}
	if len(snap.Metrics) == 0 {
		lines = append(lines, "(waiting for metrics to be declared or data to arrive)")
	}
	lines = append(lines, fmt.Sprintf("%d points in %d metrics", snap.Points, len(snap.Metrics)))
	// A line wider than the terminal would wrap and throw off the redraw.
	cols := terminalWidth(s.w)
	var b strings.Builder
	if s.lines > 0 {
		fmt.Fprintf(&b, "\x1b[%dF", s.lines) // back to the first line drawn
	}
	for i, l := range lines {
		if r := []rune(l); cols > 1 && len(r) >= cols {
			l = string(r[:cols-2]) + "…"
		}
		if i == bold {
			l = "\x1b[1m" + l + "\x1b[0m"
		}
		b.WriteString(l)
		b.WriteString("\x1b[K\n")
	}
	b.WriteString("\x1b[J")
	_, _ = io.WriteString(s.w, b.String())
	s.lines = len(lines)
}

func randomToken(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// writeFileAtomic writes a file that readers see complete or not at all.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
