package manager

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
)

// isoNow is Python's datetime.now(timezone.utc).isoformat(): microseconds,
// "+00:00", and no fraction when the microseconds are zero.
func isoNow() string { return amqpkit.ISOTime(time.Now()) }

// mergeMetadata applies one declared metadata object to a metric's stored
// document (nil when new) with the manager's rules, and returns the new
// document:
//   - "source" and "historic" in the declaration are dropped (reported in
//     dropped);
//   - keys starting with "_" are skipped;
//   - "date" is set to date unless the declaration has one;
//   - every other key is copied over; keys already stored are never removed;
//   - "source" is set to token.
func mergeMetadata(old, declared map[string]any, token, date string) (doc map[string]any, dropped []string) {
	doc = deepCopy(old)
	if doc == nil {
		doc = make(map[string]any, len(declared)+2)
	}
	for _, reserved := range []string{"source", "historic"} {
		if _, ok := declared[reserved]; ok {
			dropped = append(dropped, reserved)
		}
	}
	if _, ok := declared["date"]; !ok {
		doc["date"] = date
	}
	for key, value := range declared {
		if key == "source" || key == "historic" || strings.HasPrefix(key, "_") {
			continue
		}
		doc[key] = deepCopyValue(value)
	}
	doc["source"] = token
	return doc, dropped
}

// declare stores the declared metrics of token. A name CouchDB would refuse
// as a document id (empty, or starting with "_") fails the whole request
// with the manager's "metadata update failed", and nothing is stored.
func (m *Manager) declare(token string, declared map[string]map[string]any) error {
	for name := range declared {
		if name == "" || strings.HasPrefix(name, "_") {
			m.log.Error("error updating metadata: invalid metric name (document id)", "token", token, "metric", name)
			return errors.New("metadata update failed")
		}
	}
	date := isoNow()
	var created, updated int
	m.mu.Lock()
	for name, md := range declared {
		old, exists := m.metadata[name]
		if exists {
			updated++
		} else {
			created++
		}
		doc, dropped := mergeMetadata(old, md, token, date)
		for _, key := range dropped {
			m.log.Warn("ignoring reserved metadata field", "field", key, "metric", name, "token", token)
		}
		if prev, ok := old["source"]; ok && prev != token {
			m.log.Warn("changing source for metric", "metric", name, "from", prev, "to", token)
		}
		m.metadata[name] = doc
		m.metaRev[name]++
	}
	m.metaDirty = true
	m.mu.Unlock()
	m.log.Info("client declared metrics", "token", token, "count", len(declared), "new", created, "updated", updated)
	select {
	case m.metaWake <- struct{}{}:
	default: // a wake is pending: the write it brings includes this declare
	}
	return nil
}

// startMetadataWriter starts the metadata file's one writer,
// metadataWriter. It writes the latest
// state whenever declares changed it; declares that come while a write is
// under way share the next write, so that N declares of one metric each
// do not rewrite a file growing with N N times (O(N^2) bytes). When Close
// stops it, it writes once more if anything changed since.
func (m *Manager) startMetadataWriter() {
	m.metaStop, m.metaDone = make(chan struct{}), make(chan struct{})
	go m.metadataWriter()
}

func (m *Manager) metadataWriter() {
	defer close(m.metaDone)
	for {
		select {
		case <-m.metaWake:
			m.writeMetadataFile()
		case <-m.metaStop:
			m.writeMetadataFile()
			return
		}
	}
}

// writeMetadataFile writes the file if the metadata changed since the last
// write.
func (m *Manager) writeMetadataFile() {
	m.mu.Lock()
	dirty := m.metaDirty
	m.metaDirty = false
	m.mu.Unlock()
	if !dirty {
		return
	}
	if err := m.saveMetadataFile(); err != nil {
		// The in-memory store is updated; the file is a convenience.
		m.log.Error("could not write the metadata file", "file", m.metaFile, "error", err)
	}
}

// document returns a metric's metadata as the manager's CouchDB document
// (with "_id" and "_rev"), or nil when there is none. Call with m.mu held.
func (m *Manager) document(name string) map[string]any {
	md, ok := m.metadata[name]
	if !ok {
		return nil
	}
	doc := deepCopy(md)
	doc["_id"] = name
	doc["_rev"] = fmt.Sprintf("%d-local", m.metaRev[name])
	return doc
}

// fetchMetadata is the manager's fetch_metadata: name -> document, or null
// for a metric nobody declared.
func (m *Manager) fetchMetadata(names []string) map[string]any {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]any, len(names))
	for _, name := range names {
		if doc := m.document(name); doc != nil {
			out[name] = doc
		} else {
			out[name] = nil
		}
	}
	return out
}

// handleGetMetrics follows the manager's get_metrics:
//   - format "array" (default) gives names, "object" name -> metadata;
//   - selector is a regular expression searched in the name, or a
//     non-empty array of names; it excludes prefix and infix;
//   - prefix keeps names starting with it; infix names one of whose
//     dot-separated tails starts with it; not both;
//   - historic (bool): with a selector, metadata "historic" must equal it;
//     without one, any value keeps only historic metrics (the manager
//     queries its "historic" view either way);
//   - hidden (bool): with a selector, "hidden" must equal it; without one it
//     applies only together with historic, and only false is supported;
//   - limit caps the count; results are sorted by name.
//
// The reply is {"metrics": <array or object>}.
func (m *Manager) handleGetMetrics(r *request) (any, error) {
	format := "array"
	if v, ok := r.args["format"]; ok && v != nil {
		s, _ := v.(string)
		if s != "array" && s != "object" {
			return nil, fmt.Errorf("unknown format requested: %v", v)
		}
		format = s
	}
	prefix, hasPrefix, err := optString(r.args, "prefix")
	if err != nil {
		return nil, err
	}
	infix, hasInfix, err := optString(r.args, "infix")
	if err != nil {
		return nil, err
	}
	if hasPrefix && hasInfix {
		return nil, errors.New(`cannot get_metrics with both "prefix" and "infix"`)
	}
	historic, hasHistoric, err := optBool(r.args, "historic")
	if err != nil {
		return nil, err
	}
	hidden, hasHidden, err := optBool(r.args, "hidden")
	if err != nil {
		return nil, err
	}
	limit := -1
	if v, ok := r.args["limit"]; ok && v != nil {
		n, isNum := v.(float64)
		if !isNum || n < 0 || n != float64(int(n)) {
			return nil, fmt.Errorf(`invalid "limit": want a non-negative integer, got %v`, v)
		}
		limit = int(n)
	}

	var match func(name string, md map[string]any) bool
	if sel, ok := r.args["selector"]; ok && sel != nil {
		if hasPrefix || hasInfix {
			return nil, errors.New(`cannot get_metrics with both "selector" and "prefix" or "infix".`)
		}
		var byName func(string) bool
		switch s := sel.(type) {
		case string:
			re, err := regexp.Compile(s)
			if err != nil {
				return nil, fmt.Errorf("invalid selector regex: %v", err)
			}
			byName = re.MatchString
		case []any:
			names, err := stringList("selector", s)
			if err != nil {
				return nil, err
			}
			if len(names) == 0 {
				return nil, errors.New("Empty selector list")
			}
			set := make(map[string]bool, len(names))
			for _, n := range names {
				set[n] = true
			}
			byName = func(n string) bool { return set[n] }
		default:
			return nil, fmt.Errorf("Invalid selector type: %s, supported: str, list", jsonType(sel))
		}
		match = func(name string, md map[string]any) bool {
			if !byName(name) {
				return false
			}
			if hasHistoric && md["historic"] != historic {
				return false
			}
			if hasHidden && md["hidden"] != hidden {
				return false
			}
			return true
		}
	} else {
		if hasHistoric && hasHidden && hidden {
			return nil, errors.New("hidden lookup not yet supported")
		}
		match = func(name string, md map[string]any) bool {
			if hasHistoric {
				if md["historic"] != true {
					return false
				}
				if hasHidden && truthy(md["hidden"]) {
					return false
				}
			}
			if hasPrefix && !strings.HasPrefix(name, prefix) {
				return false
			}
			if hasInfix && !infixMatch(name, infix) {
				return false
			}
			return true
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.metadata))
	for name, md := range m.metadata {
		if match(name, md) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if limit >= 0 && len(names) > limit {
		names = names[:limit]
	}
	if format == "array" {
		return map[string]any{"metrics": names}, nil
	}
	docs := make(map[string]any, len(names))
	for _, name := range names {
		docs[name] = m.document(name)
	}
	return map[string]any{"metrics": docs}, nil
}

// infixMatch is the manager's "components" view lookup: some tail of the
// dot-separated name ("c", "b.c", "a.b.c" for "a.b.c") starts with infix.
func infixMatch(name, infix string) bool {
	parts := strings.Split(name, ".")
	for i := range parts {
		if strings.HasPrefix(strings.Join(parts[i:], "."), infix) {
			return true
		}
	}
	return false
}

func truthy(v any) bool {
	switch v := v.(type) {
	case nil:
		return false
	case bool:
		return v
	case float64:
		return v != 0
	case string:
		return v != ""
	case []any:
		return len(v) > 0
	case map[string]any:
		return len(v) > 0
	}
	return true
}

func optString(args map[string]any, key string) (string, bool, error) {
	v, ok := args[key]
	if !ok || v == nil {
		return "", false, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", false, fmt.Errorf("invalid type for %q argument: should be a string, is %s", key, jsonType(v))
	}
	return s, true, nil
}

func optBool(args map[string]any, key string) (bool, bool, error) {
	v, ok := args[key]
	if !ok || v == nil {
		return false, false, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, false, fmt.Errorf("Invalid type for %q argument: should be bool, is %s", key, jsonType(v))
	}
	return b, true, nil
}

func (m *Manager) loadMetadataFile(path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("metadata file: %w", err)
	}
	var stored map[string]map[string]any
	if err := json.Unmarshal(data, &stored); err != nil {
		return fmt.Errorf("metadata file %s: want a JSON object metric -> metadata object: %w", path, err)
	}
	for name, md := range stored {
		if md == nil {
			md = map[string]any{}
		}
		m.metadata[name] = md
		m.metaRev[name] = 1
	}
	return nil
}

// saveMetadataFile rewrites the metadata file atomically (write, rename).
func (m *Manager) saveMetadataFile() error {
	m.mu.Lock()
	data, err := json.MarshalIndent(m.metadata, "", "  ")
	m.mu.Unlock()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(m.metaFile), "."+filepath.Base(m.metaFile)+".*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(append(data, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), m.metaFile)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	return err
}
