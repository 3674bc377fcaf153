package libmetricq

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sort"
)

// Metadata describes a metric: free-form JSON keys such as "unit", "rate",
// "description" (see the MetricQ metadata conventions).
type Metadata map[string]any

// DeclareMetrics declares metrics with their metadata to the manager. Every
// name is checked first; nothing is declared if one is bad. Its cost is
// linear in len(metrics), whatever the number already declared.
// "chunkSize" is added to metadata that lacks it (null for manual
// flushing), as the reference does. Metrics new to the source are laid
// out in memory in the map's order, which is random: a program that sends
// round-robin over many thousands of metrics sends faster if it takes
// their Metric handles first, in its sending order (or declares them with
// DeclareMetricList, in that order).
func (s *Source) DeclareMetrics(ctx context.Context, metrics map[string]Metadata) error {
	names := make([]string, 0, len(metrics))
	for name := range metrics {
		names = append(names, name)
	}
	return s.declare(ctx, names, metrics)
}

// declare declares the metrics names (each once), with their metadata in
// metadata (nil: none). Metrics new to the source are created in the order
// of names (see metric).
func (s *Source) declare(ctx context.Context, names []string, metadata map[string]Metadata) error {
	if err := s.usable(); err != nil {
		return err
	}
	for _, name := range names {
		if err := ValidateMetricName(name); err != nil {
			return err
		}
		for key := range metadata[name] {
			if key == "source" || key == "historic" || (key != "" && key[0] == '_') {
				s.log.Warn("metadata key is owned by the manager and will be dropped", "metric", name, "key", key)
			}
		}
	}
	request := make(declarations, 0, len(names))
	plain := map[int]json.RawMessage{}
	for _, name := range names {
		m := s.metric(name)
		m.mu.Lock()
		chunkSize := m.chunkSize
		m.mu.Unlock()
		encoded, err := encodeMetadata(metadata[name], chunkSize, plain)
		if err != nil {
			return &MetricError{Metric: name, Err: fmt.Errorf("%w: metadata cannot be encoded as JSON: %v", ErrInvalid, err)}
		}
		request = append(request, declaration{m: m, metadata: encoded})
	}
	if len(request) == 0 {
		return nil
	}
	ctx, cancel := s.withRPCTimeout(ctx)
	defer cancel()
	for {
		s.declMu.Lock()
		epoch := s.declEpoch
		s.declMu.Unlock()
		if _, err := s.rpc(ctx, "source.declare_metrics", map[string]any{"metrics": request}); err != nil {
			return fmt.Errorf("declare %d metrics: %w", len(request), err)
		}
		s.declMu.Lock()
		if s.pub() == nil {
			s.declMu.Unlock()
			return fmt.Errorf("declare %d metrics: %w", len(request), s.notConnectedErr())
		}
		for _, d := range request {
			d.m.mu.Lock()
			d.m.declared = true
			d.m.declaration = d.metadata
			s.countChunk(d.m)
			d.m.mu.Unlock()
		}
		s.fitBound()
		again := s.declEpoch != epoch
		s.declMu.Unlock()
		if !again {
			return nil
		}
		// A reconnect collected the declared metrics to declare them again
		// while this declaration was under way, maybe without these: send
		// it once more, on the new connection (declaring is idempotent).
	}
}

// DeclareMetricList declares metrics without metadata (beyond chunkSize).
// Metrics new to the source are laid out in memory in the list's order: a
// program that then sends to them in that order (round-robin over many
// metrics, say) touches memory in order, which the CPU's prefetching
// makes cheap.
func (s *Source) DeclareMetricList(ctx context.Context, names []string) error {
	seen := make(map[string]struct{}, len(names))
	unique := make([]string, 0, len(names))
	for _, name := range names {
		if _, again := seen[name]; !again {
			seen[name] = struct{}{}
			unique = append(unique, name)
		}
	}
	return s.declare(ctx, unique, nil)
}

// DeclaredMetrics lists the declared metric names, sorted.
func (s *Source) DeclaredMetrics() []string {
	var names []string
	s.metrics.each(func(m *metric) {
		m.mu.Lock()
		if m.declared {
			names = append(names, m.name)
		}
		m.mu.Unlock()
	})
	sort.Strings(names)
	return names
}

// encodeMetadata is the metadata a metric is declared with: md, plus
// "chunkSize" when md lacks it (null for manual flushing), as the
// reference adds it. Metadata that is only the chunk size is shared
// between the metrics of one declaration (plain is the cache, keyed by
// chunk size), so that declaring many metrics without metadata does not
// keep a copy per metric.
func encodeMetadata(md Metadata, chunkSize int, plain map[int]json.RawMessage) (json.RawMessage, error) {
	if _, ok := md["chunkSize"]; ok {
		return json.Marshal(md)
	}
	if len(md) == 0 {
		if shared, ok := plain[chunkSize]; ok {
			return shared, nil
		}
	}
	augmented := make(Metadata, len(md)+1)
	maps.Copy(augmented, md)
	if chunkSize == ChunkSizeManual {
		augmented["chunkSize"] = nil
	} else {
		augmented["chunkSize"] = chunkSize
	}
	encoded, err := json.Marshal(augmented)
	if err == nil && len(md) == 0 {
		plain[chunkSize] = encoded
	}
	return encoded, err
}
