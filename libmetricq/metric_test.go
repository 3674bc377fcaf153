package libmetricq

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"unsafe"
)

// The hand-written declare_metrics payload must read back as the map
// json.Marshal would have produced, for names that need escaping too.
func TestDeclarationsEncodeAsObject(t *testing.T) {
	plain := map[int]json.RawMessage{}
	names := []string{"plain.name", `quote".back\slash`, "tab\tand\x01ctl", "ünïcode.µ", "html<&>"}
	mds := []Metadata{nil, {"unit": "W"}, {"chunkSize": 7}, {}, {"rate": 2.5, "nested": map[string]any{"a": []any{1.0, "b"}}}}
	var d declarations
	want := map[string]map[string]any{}
	for i, name := range names {
		encoded, err := encodeMetadata(mds[i], 10, plain)
		if err != nil {
			t.Fatal(err)
		}
		d = append(d, declaration{m: &metric{name: name}, metadata: encoded})
		w := map[string]any{"chunkSize": 10.0}
		for k, v := range mds[i] {
			w[k] = v
		}
		if mds[i]["chunkSize"] == 7 {
			w["chunkSize"] = 7.0
		}
		want[name] = w
	}
	body, err := json.Marshal(map[string]any{"metrics": d})
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ Metrics map[string]map[string]any }
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("payload %s: %v", body, err)
	}
	wantJSON, _ := json.Marshal(want)
	gotJSON, _ := json.Marshal(got.Metrics)
	if !reflect.DeepEqual(wantJSON, gotJSON) {
		t.Errorf("payload decodes to\n%s\nwant\n%s", gotJSON, wantJSON)
	}
}

func TestEncodeMetadataManualChunkIsNull(t *testing.T) {
	encoded, err := encodeMetadata(nil, ChunkSizeManual, map[int]json.RawMessage{})
	if err != nil {
		t.Fatal(err)
	}
	if string(encoded) != `{"chunkSize":null}` {
		t.Errorf("got %s", encoded)
	}
	if _, err := encodeMetadata(Metadata{"bad": make(chan int)}, 1, map[int]json.RawMessage{}); err == nil {
		t.Error("metadata that is not JSON encoded without error")
	}
}

// Concurrent creators of one name get one metric; every metric created is
// visited by each.
func TestMetricTableCreatesOnce(t *testing.T) {
	var table metricTable
	const names, workers = 1000, 4
	got := make([][]*metric, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range names {
				got[w] = append(got[w], table.getOrCreate(fmt.Sprintf("m%d", i), 5))
			}
		}()
	}
	wg.Wait()
	for i := range names {
		for w := 1; w < workers; w++ {
			if got[w][i] != got[0][i] {
				t.Fatalf("metric m%d created twice", i)
			}
		}
	}
	if table.len() != names {
		t.Errorf("len %d, want %d", table.len(), names)
	}
	seen := map[string]bool{}
	table.each(func(m *metric) { seen[m.name] = true })
	if len(seen) != names {
		t.Errorf("each visited %d metrics, want %d", len(seen), names)
	}
	if table.lookup("m999") != got[0][999] || table.lookup("nope") != nil {
		t.Error("lookup disagrees with getOrCreate")
	}
}

// A metric once created is found by every later lookup, also while the
// table grows under it.
func TestMetricTableFindsWhileGrowing(t *testing.T) {
	var table metricTable
	const names = 20000
	created := make(chan int, names)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range created {
			name := fmt.Sprintf("m%d", i)
			if table.lookup(name) == nil {
				t.Errorf("%s created but not found", name)
				return
			}
		}
	}()
	for i := range names {
		table.getOrCreate(fmt.Sprintf("m%d", i), 1)
		created <- i
	}
	close(created)
	<-done
	if table.lookup("never") != nil || table.len() != names {
		t.Errorf("len %d, want %d; or a name never created was found", table.len(), names)
	}
}

// The fields a point needs lie in the struct's first cache line, and the
// struct is allocated in a size class that starts on a line: with many
// metrics each further line is one more miss per point.
func TestMetricHotFieldsShareALine(t *testing.T) {
	const line = 64
	var m metric
	hot := []struct {
		name        string
		offset, end uintptr
	}{
		{"mu", unsafe.Offsetof(m.mu), unsafe.Offsetof(m.mu) + unsafe.Sizeof(m.mu)},
		{"declared", unsafe.Offsetof(m.declared), unsafe.Offsetof(m.declared) + unsafe.Sizeof(m.declared)},
		{"hasLast", unsafe.Offsetof(m.hasLast), unsafe.Offsetof(m.hasLast) + unsafe.Sizeof(m.hasLast)},
		{"chunkSize", unsafe.Offsetof(m.chunkSize), unsafe.Offsetof(m.chunkSize) + unsafe.Sizeof(m.chunkSize)},
		{"last", unsafe.Offsetof(m.last), unsafe.Offsetof(m.last) + unsafe.Sizeof(m.last)},
		{"accepted", unsafe.Offsetof(m.accepted), unsafe.Offsetof(m.accepted) + unsafe.Sizeof(m.accepted)},
		{"open", unsafe.Offsetof(m.open), unsafe.Offsetof(m.open) + unsafe.Sizeof(m.open)},
	}
	for _, f := range hot {
		if f.end > line {
			t.Errorf("metric.%s ends at byte %d, beyond the first %d", f.name, f.end, line)
		}
	}
	// Go's 128-byte size class (for 113 to 128 bytes) places objects at
	// multiples of 128 in a span: on a line. Neighbouring classes (112,
	// 144) do not.
	if size := unsafe.Sizeof(m); size <= 112 || size > 128 {
		t.Errorf("metric is %d bytes, not in the 128-byte size class: it may not start on a %d-byte line", size, line)
	}
}
