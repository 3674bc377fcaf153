package libmetricq

import (
	"encoding/json"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// metric is one metric's buffer: the points accepted but not yet sealed
// into a chunk, and what deciding on the next point needs. mu guards
// everything below it; the send path takes it once per point (or batch).
//
// With many metrics a point costs, above all, the cache lines it touches,
// each one a likely miss: so the fields a point needs come first, in the
// struct's first 64 bytes (TestMetricHotFieldsShareALine), and the open
// points stay in storage the metric keeps, which a sealed chunk copies
// (chunks are recycled across metrics in confirmation order, so storage
// taken from them would lie anywhere in memory). The storage is allocated
// at the metric's first point: a declared but quiet metric costs little
// more than its name, and metrics first sent to in turn get storage side by
// side.
type metric struct {
	mu        sync.Mutex
	declared  bool
	hasLast   bool
	chunkSize int
	last      int64
	accepted  uint64  // points accepted, for Stats (counted here, under mu, rather than in a shared atomic)
	open      []Point // accepted, not yet sealed

	name string
	hash uint64 // of name, for the metric table
	// declaration is the metadata sent with the last successful declare,
	// as JSON: a reconnect sends it again without encoding it anew, and a
	// few bytes cost less than a map per metric.
	declaration json.RawMessage
	leased      int // buffer space reserved for a staging layer's points (lease.go)
	// countedChunk is the chunk size this metric adds to the bound's
	// growth while declared (bound.go).
	countedChunk int
}

// metricTable finds a metric by name. Metrics are added, never removed,
// which allows a table of its own rather than a sync.Map: open addressing
// in an array of pointers, read without a lock, written under mu, replaced
// by one twice its size when half full. A lookup costs a hash and, among
// 100,000 metrics, about three cache misses (the slot, the metric, its
// name), against twice that for the levels of a sync.Map's trie; adding a
// metric costs O(1) amortised, so declaring N metrics, in one call or in
// N, is O(N). The zero value is an empty table.
type metricTable struct {
	slots atomic.Pointer[metricSlots]
	count atomic.Int64
	mu    sync.Mutex // serialises adding metrics and growing
}

// metricSlots is one generation of the table: a power-of-two number of
// slots, each nil or a metric at (or linearly after) its hash's slot.
type metricSlots struct {
	slot []atomic.Pointer[metric]
	mask uint64
}

var metricHashSeed = maphash.MakeSeed()

// lookup returns the named metric, nil if it was never created.
func (t *metricTable) lookup(name string) *metric {
	h := maphash.String(metricHashSeed, name)
	for {
		slots := t.slots.Load()
		if slots == nil {
			return nil
		}
		if m := slots.find(name, h); m != nil {
			return m
		}
		// Not in this generation: absent, unless the table grew meanwhile
		// and the metric was added to the new one only.
		if t.slots.Load() == slots {
			return nil
		}
	}
}

func (s *metricSlots) find(name string, h uint64) *metric {
	for i := h & s.mask; ; i = (i + 1) & s.mask {
		m := s.slot[i].Load()
		if m == nil {
			return nil
		}
		if m.hash == h && m.name == name {
			return m
		}
	}
}

// getOrCreate returns the named metric, creating it with chunkSize.
func (t *metricTable) getOrCreate(name string, chunkSize int) *metric {
	if m := t.lookup(name); m != nil {
		return m
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	h := maphash.String(metricHashSeed, name)
	slots := t.slots.Load()
	if slots != nil {
		if m := slots.find(name, h); m != nil {
			return m
		}
	}
	if n := t.count.Load() + 1; slots == nil || uint64(2*n) > slots.mask+1 {
		slots = t.grow(slots)
	}
	m := &metric{name: name, hash: h, chunkSize: chunkSize}
	slots.put(m)
	t.count.Add(1)
	return m
}

// grow installs a generation twice the size (16 slots at first), under mu.
func (t *metricTable) grow(old *metricSlots) *metricSlots {
	size := uint64(16)
	if old != nil {
		size = 2 * (old.mask + 1)
	}
	next := &metricSlots{slot: make([]atomic.Pointer[metric], size), mask: size - 1}
	if old != nil {
		for i := range old.slot {
			if m := old.slot[i].Load(); m != nil {
				next.put(m)
			}
		}
	}
	t.slots.Store(next)
	return next
}

// put stores m in its first free slot; under mu, with a free slot left.
func (s *metricSlots) put(m *metric) {
	i := m.hash & s.mask
	for s.slot[i].Load() != nil {
		i = (i + 1) & s.mask
	}
	s.slot[i].Store(m)
}

// each calls fn for every metric, including every metric created before
// the call began.
func (t *metricTable) each(fn func(*metric)) {
	slots := t.slots.Load()
	if slots == nil {
		return
	}
	for i := range slots.slot {
		if m := slots.slot[i].Load(); m != nil {
			fn(m)
		}
	}
}

// len is the number of metrics.
func (t *metricTable) len() int { return int(t.count.Load()) }

// follows checks, under mu, that a point at first may come next in time.
func (m *metric) follows(first int64) error {
	if m.hasLast && first <= m.last {
		return OrderError(m.name, Timestamp(first), Timestamp(m.last))
	}
	return nil
}

// OrderError is the error of a point at t refused because the metric's last
// accepted timestamp is last (t <= last).
func OrderError(metric string, t, last Timestamp) error {
	return &MetricError{Metric: metric, Err: fmt.Errorf("%w: %d ns is not after the last accepted %d ns", ErrOrder, t, last)}
}

// add appends one checked point, under mu, sealing the chunk when it fills.
func (m *metric) add(out *publisher, t int64, value float64) {
	if cap(m.open) == 0 {
		m.open = make([]Point, 0, m.storageSize())
	}
	m.open = append(m.open, Point{Time: Timestamp(t), Value: value})
	m.last, m.hasLast = t, true
	if m.chunkSize != ChunkSizeManual && len(m.open) >= m.chunkSize {
		m.seal(out)
	}
}

// storageSize is how many points the open storage is allocated for: a
// chunk, unless the chunk size is huge (or manual), when it grows as
// points come.
func (m *metric) storageSize() int {
	return min(max(m.chunkSize, 1), maxPooledCapacity)
}

// addBatch appends checked points (strictly increasing, after the last),
// under mu, sealing chunks as they fill. A whole chunk of the batch becomes
// a chunk at once, without passing through the open storage.
func (m *metric) addBatch(out *publisher, times []int64, values []float64) {
	m.last, m.hasLast = times[len(times)-1], true
	for len(times) > 0 {
		take := len(times)
		if m.chunkSize != ChunkSizeManual {
			take = min(take, m.chunkSize-len(m.open))
			if take == m.chunkSize && out != nil {
				out.enqueue(newChunk(m.name, times[:take], values[:take]))
				times, values = times[take:], values[take:]
				continue
			}
		}
		if cap(m.open) == 0 {
			m.open = make([]Point, 0, m.storageSize())
		}
		for i := range take {
			m.open = append(m.open, Point{Time: Timestamp(times[i]), Value: values[i]})
		}
		times, values = times[take:], values[take:]
		if m.chunkSize != ChunkSizeManual && len(m.open) >= m.chunkSize {
			m.seal(out)
		}
	}
}

// seal hands the open points to the publisher, as a chunk of their own;
// mu is held. Taking them out under the lock is what keeps concurrent
// flushes from publishing overlapping chunks, and a metric's chunks in
// order. Without a publisher (not connected, or a failed connect being
// undone) the points stay.
func (m *metric) seal(out *publisher) {
	if len(m.open) == 0 || out == nil {
		return
	}
	out.enqueue(sealedChunk(m.name, m.open))
	m.open = m.open[:0]
	if cap(m.open) > maxPooledCapacity {
		m.open = nil // a burst of a manually flushed metric: not kept for good
	}
}

// setChunkSize changes the chunk size, under mu; points already holding a
// full chunk are sealed now.
func (m *metric) setChunkSize(out *publisher, n int) {
	m.chunkSize = n
	if n != ChunkSizeManual && len(m.open) >= n {
		m.seal(out)
	}
}

// openPoints is the number of points in the open chunk, under mu.
func (m *metric) openPoints() int { return len(m.open) }

// declaration is one metric's entry in a declare_metrics request: its
// metadata, encoded.
type declaration struct {
	m        *metric
	metadata json.RawMessage
}

// declarations encodes as the "metrics" argument of declare_metrics, an
// object name -> metadata, in one pass: json.Marshal of a map would sort
// the names first and encode every metadata map again.
type declarations []declaration

func (d declarations) MarshalJSON() ([]byte, error) {
	size := 2
	for _, e := range d {
		size += len(e.m.name) + len(e.metadata) + 4
	}
	out := make([]byte, 0, size)
	out = append(out, '{')
	for i, e := range d {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendJSONString(out, e.m.name)
		out = append(out, ':')
		out = append(out, e.metadata...)
	}
	return append(out, '}'), nil
}

// appendJSONString appends s as a JSON string. Metric names are almost
// always plain ASCII, which needs no escaping.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			quoted, _ := json.Marshal(s) // a string always encodes
			return append(dst, quoted...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
