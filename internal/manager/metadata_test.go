package manager

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Declares that come before the writer gets to run share one write, and
// the write Close makes holds the latest state: here the writer's wake is
// taken away first, so only Close's last write can produce the file.
func TestMetadataFileLastWriteAtClose(t *testing.T) {
	file := filepath.Join(t.TempDir(), "metadata.json")
	log, _ := testLogger(t)
	m := &Manager{
		metaFile: file,
		log:      log,
		metadata: make(map[string]map[string]any),
		metaRev:  make(map[string]int),
		metaWake: make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	const n = 1000
	for i := range n {
		name := fmt.Sprintf("close.m%04d", i)
		if err := m.declare("source-a", map[string]map[string]any{name: {"rate": float64(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.declare("source-b", map[string]map[string]any{"close.m0000": {"unit": "W"}}); err != nil {
		t.Fatal(err)
	}
	<-m.metaWake
	m.startMetadataWriter()
	stored := metadataAfterClose(t, m, file, n)
	for i := 1; i < n; i++ {
		if md := stored[fmt.Sprintf("close.m%04d", i)]; md["rate"] != float64(i) || md["source"] != "source-a" {
			t.Fatalf("close.m%04d in the file: %v", i, md)
		}
	}
	if md := stored["close.m0000"]; md["unit"] != "W" || md["source"] != "source-b" {
		t.Errorf("close.m0000 in the file: %v, want the latest declare (unit W, source-b)", md)
	}
}

// readMetadataFile reads a metadata file written by a manager.
func readMetadataFile(t *testing.T, file string) map[string]map[string]any {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("metadata file: %v", err)
	}
	var stored map[string]map[string]any
	if err := json.Unmarshal(data, &stored); err != nil {
		t.Fatalf("metadata file is not JSON: %v\n%s", err, data)
	}
	return stored
}

// metadataAfterClose closes the manager and reads its metadata file, which
// must hold n metrics.
func metadataAfterClose(t *testing.T, m *Manager, file string, n int) map[string]map[string]any {
	t.Helper()
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	stored := readMetadataFile(t, file)
	if len(stored) != n {
		t.Fatalf("metadata file holds %d metrics, want %d", len(stored), n)
	}
	return stored
}
