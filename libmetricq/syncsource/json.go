package syncsource

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"unicode/utf8"

	"github.com/libmetricq/libmetricq/libmetricq"
)

// decodeJSON reads exactly one JSON value, keeping numbers exact
// (json.Number). Invalid UTF-8 is refused rather than replaced, and so is
// anything after the value.
func decodeJSON(text []byte, what string, v any) error {
	if !utf8.Valid(text) {
		return invalid("%s is not valid UTF-8", what)
	}
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return invalid("%s is not valid JSON: %v", what, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalid("%s has more after its JSON value", what)
	}
	return nil
}

// ParseMetadata reads a metric's metadata: a JSON object; nil (a NULL
// pointer) means {}.
func ParseMetadata(text []byte) (libmetricq.Metadata, error) {
	if text == nil {
		return libmetricq.Metadata{}, nil
	}
	var raw json.RawMessage
	if err := decodeJSON(text, "metadata", &raw); err != nil {
		return nil, err
	}
	return metadataObject(raw, "metadata")
}

func metadataObject(raw json.RawMessage, what string) (libmetricq.Metadata, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, invalid("%s must be a JSON object, got %s", what, jsonKind(trimmed))
	}
	var md libmetricq.Metadata
	if err := decodeJSON(trimmed, what, &md); err != nil {
		return nil, err
	}
	return md, nil
}

// ParseMetricSet reads the argument of declare_many: a JSON object
// {name: metadata object or null, ...} or a JSON array of names. It reads
// the text once (a source may declare 100,000 metrics in one call), and
// the metadata {} of each metric without a decoder of its own.
func ParseMetricSet(text []byte) (map[string]libmetricq.Metadata, error) {
	if text == nil {
		return nil, invalid("metrics JSON is NULL")
	}
	trimmed := bytes.TrimSpace(text)
	switch {
	case len(trimmed) > 0 && trimmed[0] == '[':
		var list []json.RawMessage
		if err := decodeJSON(trimmed, "metrics JSON", &list); err != nil {
			return nil, err
		}
		out := make(map[string]libmetricq.Metadata, len(list))
		for i, item := range list {
			var name string
			if json.Unmarshal(item, &name) != nil {
				return nil, invalid("metrics JSON array element %d is %s, not a metric name", i, jsonKind(item))
			}
			out[name] = nil
		}
		return out, nil
	case len(trimmed) > 0 && trimmed[0] == '{':
		var obj map[string]json.RawMessage
		if err := decodeJSON(trimmed, "metrics JSON", &obj); err != nil {
			return nil, err
		}
		out := make(map[string]libmetricq.Metadata, len(obj))
		for name, item := range obj {
			item = bytes.TrimSpace(item)
			switch {
			case bytes.Equal(item, []byte("null")):
				out[name] = nil
			case bytes.Equal(item, []byte("{}")):
				out[name] = libmetricq.Metadata{}
			default:
				md, err := metadataObject(item, "metadata of "+quote(name))
				if err != nil {
					return nil, err
				}
				out[name] = md
			}
		}
		return out, nil
	}
	var raw json.RawMessage
	if err := decodeJSON(text, "metrics JSON", &raw); err != nil {
		return nil, err
	}
	return nil, invalid("metrics JSON must be an object {name: metadata} or an array of names, got %s", jsonKind(raw))
}

func jsonKind(raw []byte) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// quote makes a name safe and bounded for an error text.
func quote(name string) string {
	if len(name) > 80 {
		cut := 80
		for cut > 0 && !utf8.RuneStart(name[cut]) {
			cut--
		}
		name = name[:cut] + "…"
	}
	b, _ := json.Marshal(name)
	return string(b)
}
