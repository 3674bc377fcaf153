package main

import (
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libmetricq/libmetricq/libmetricq"
)

// board keeps what watch (and tail -http) show per metric: the count and
// latest point of what arrived, the arrival rate, the metadata the manager
// knows, and, for the browser view, a thinned-out recent history.
type board struct {
	bindings []string // AMQP topic binding keys; a declared metric is listed when one matches

	mu      sync.Mutex
	started time.Time
	metrics map[string]*metricState
	total   uint64
	keep    bool // keep points for the browser view (fresh, history)
	changed bool // a metric appeared or its metadata changed since the last takeChanged
}

// Limits of the points kept for the browser view.
const (
	freshCap      = 4096             // points per metric waiting for the next flush
	flushPoints   = 25               // points per metric per flush (evenly thinned out)
	historyCap    = 3000             // flushed points kept per metric for new pages
	historyWindow = 90 * time.Second // and no older than this before the newest
	rateWindow    = 5                // rate over the last this many ticks
)

type metricState struct {
	name     string
	metadata map[string]any // nil: not declared (as far as we know)
	count    uint64
	last     libmetricq.Point
	arrived  time.Time // of the latest chunk
	created  time.Time
	samples  []rateSample // at each tick, oldest first, at most rateWindow+1
	fresh    []libmetricq.Point
	history  []libmetricq.Point
}

type rateSample struct {
	at    time.Time
	count uint64
}

func newBoard(bindings []string, keepPoints bool) *board {
	return &board{
		bindings: bindings,
		started:  time.Now(),
		metrics:  make(map[string]*metricState),
		keep:     keepPoints,
	}
}

// metric returns name's state, creating it. Call with b.mu held.
func (b *board) metric(name string, now time.Time) *metricState {
	m := b.metrics[name]
	if m == nil {
		m = &metricState{name: name, created: now}
		b.metrics[name] = m
		b.changed = true
	}
	return m
}

// add records a chunk that arrived; it reports whether the metric is new.
func (b *board) add(metric string, points []libmetricq.Point) (isNew bool) {
	if len(points) == 0 {
		return false
	}
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	isNew = b.metrics[metric] == nil
	m := b.metric(metric, now)
	m.count += uint64(len(points))
	b.total += uint64(len(points))
	m.last = points[len(points)-1]
	m.arrived = now
	if b.keep {
		room := freshCap - len(m.fresh)
		if room < len(points) {
			// More than the page can show arrived since the last flush:
			// keep the newest.
			drop := min(len(points)-room, len(m.fresh))
			m.fresh = append(m.fresh[:0], m.fresh[drop:]...)
			if len(points) > freshCap {
				points = points[len(points)-freshCap:]
			}
		}
		m.fresh = append(m.fresh, points...)
	}
	return isNew
}

// setMetadata sets the metadata of the declared metrics (the manager's
// get_metrics reply) that match the bindings.
func (b *board) setMetadata(docs map[string]map[string]any) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for name, md := range docs {
		if md == nil || !b.matches(name) {
			continue
		}
		m := b.metric(name, now)
		if !reflect.DeepEqual(m.metadata, md) {
			m.metadata = md
			b.changed = true
		}
	}
}

func (b *board) matches(name string) bool {
	for _, key := range b.bindings {
		if topicMatch(key, name) {
			return true
		}
	}
	return false
}

// tick samples the counts for the rates; call it about once a second.
func (b *board) tick(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.metrics {
		m.samples = append(m.samples, rateSample{now, m.count})
		if len(m.samples) > rateWindow+1 {
			m.samples = append(m.samples[:0], m.samples[len(m.samples)-rateWindow-1:]...)
		}
	}
}

// rate is the arrival rate in points per second over the last ticks (since
// the metric appeared, before it has a tick). Call with b.mu held.
func (m *metricState) rate(now time.Time) float64 {
	base := rateSample{m.created, 0}
	if len(m.samples) > 0 && now.Sub(m.samples[0].at) >= 900*time.Millisecond {
		base = m.samples[0]
	}
	dt := now.Sub(base.at).Seconds()
	if dt < 0.5 {
		return 0
	}
	return float64(m.count-base.count) / dt
}

// metricRow is one metric as /api/metrics and the "metrics" event give it.
type metricRow struct {
	Name      string         `json:"name"`
	Declared  bool           `json:"declared"`
	Metadata  map[string]any `json:"metadata"`
	Count     uint64         `json:"count"`
	Rate      jsonFloat      `json:"rate"`
	LastTime  *float64       `json:"last_time"` // ms since the epoch
	LastValue *jsonFloat     `json:"last_value"`
	Age       *float64       `json:"age"` // seconds since the latest chunk arrived
}

type boardSnapshot struct {
	Elapsed float64     `json:"elapsed"` // seconds
	Points  uint64      `json:"points"`
	Metrics []metricRow `json:"metrics"`
}

// snapshot returns every metric, sorted by name.
func (b *board) snapshot() boardSnapshot {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	s := boardSnapshot{Elapsed: now.Sub(b.started).Seconds(), Points: b.total, Metrics: make([]metricRow, 0, len(b.metrics))}
	for _, m := range b.metrics {
		row := metricRow{Name: m.name, Declared: m.metadata != nil, Metadata: m.metadata, Count: m.count, Rate: jsonFloat(m.rate(now))}
		if m.count > 0 {
			t := float64(m.last.Time) / 1e6
			v := jsonFloat(m.last.Value)
			age := now.Sub(m.arrived).Seconds()
			row.LastTime, row.LastValue, row.Age = &t, &v, &age
		}
		s.Metrics = append(s.Metrics, row)
	}
	sort.Slice(s.Metrics, func(i, j int) bool { return s.Metrics[i].Name < s.Metrics[j].Name })
	return s
}

// counts returns metric -> points received.
func (b *board) counts() map[string]uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]uint64, len(b.metrics))
	for name, m := range b.metrics {
		out[name] = m.count
	}
	return out
}

// takeChanged reports whether metrics appeared or metadata changed since
// the last call.
func (b *board) takeChanged() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.changed
	b.changed = false
	return c
}

// takeFresh returns the points that arrived since the last call, thinned
// out to at most flushPoints per metric, and appends them to the history.
func (b *board) takeFresh() map[string][]libmetricq.Point {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out map[string][]libmetricq.Point
	for name, m := range b.metrics {
		if len(m.fresh) == 0 {
			continue
		}
		pts := thin(m.fresh, flushPoints)
		m.fresh = m.fresh[:0]
		if out == nil {
			out = make(map[string][]libmetricq.Point)
		}
		out[name] = pts
		m.history = append(m.history, pts...)
		cut := 0
		newest := m.history[len(m.history)-1].Time
		for cut < len(m.history) && (len(m.history)-cut > historyCap ||
			newest.Sub(m.history[cut].Time).Duration() > historyWindow) {
			cut++
		}
		if cut > 0 {
			m.history = append(m.history[:0], m.history[cut:]...)
		}
	}
	return out
}

// history returns the flushed points kept per metric.
func (b *board) history() map[string][]libmetricq.Point {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string][]libmetricq.Point, len(b.metrics))
	for name, m := range b.metrics {
		if len(m.history) > 0 {
			out[name] = append([]libmetricq.Point(nil), m.history...)
		}
	}
	return out
}

// thin returns at most n evenly spaced points of pts, always the last one.
func thin(pts []libmetricq.Point, n int) []libmetricq.Point {
	if len(pts) <= n {
		return append([]libmetricq.Point(nil), pts...)
	}
	out := make([]libmetricq.Point, n)
	for i := range n {
		// i = n-1 maps to the last point.
		out[i] = pts[(i+1)*len(pts)/n-1]
	}
	return out
}

// topicMatch reports whether an AMQP topic binding key matches a routing
// key: words are separated by dots, "*" matches one word, "#" zero or more.
func topicMatch(pattern, key string) bool {
	return matchWords(strings.Split(pattern, "."), strings.Split(key, "."))
}

func matchWords(p, k []string) bool {
	for len(p) > 0 {
		switch p[0] {
		case "#":
			for i := 0; i <= len(k); i++ {
				if matchWords(p[1:], k[i:]) {
					return true
				}
			}
			return false
		case "*":
			if len(k) == 0 {
				return false
			}
		default:
			if len(k) == 0 || k[0] != p[0] {
				return false
			}
		}
		p, k = p[1:], k[1:]
	}
	return len(k) == 0
}

// formatValue prints a value compactly for the terminal, with its unit.
func formatValue(v float64, unit string) string {
	var s string
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		s = formatFloat(v)
	case math.Abs(v) >= 1e5:
		// 24.6 GB rather than 2.46e+10 B.
		prefixes := "kMGTPE"
		i := -1
		for math.Abs(v) >= 1000 && i < len(prefixes)-1 {
			v /= 1000
			i++
		}
		return strings.TrimSpace(trimFloat(v, 4) + " " + string(prefixes[i]) + unit)
	default:
		s = trimFloat(v, 6)
	}
	if unit != "" {
		s += " " + unit
	}
	return s
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// trimFloat prints v with at most digits significant digits.
func trimFloat(v float64, digits int) string { return strconv.FormatFloat(v, 'g', digits, 64) }
