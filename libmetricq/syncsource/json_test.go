package syncsource

import (
	"encoding/json"
	"testing"

	"github.com/libmetricq/libmetricq/libmetricq"
)

func TestParseMetadata(t *testing.T) {
	md, err := ParseMetadata(nil)
	if err != nil || md == nil || len(md) != 0 {
		t.Errorf("NULL: %v, %v", md, err)
	}
	md, err = ParseMetadata([]byte(` {"unit": "°C", "rate": 9007199254740993, "nested": {"a": [1, 2]}} `))
	if err != nil {
		t.Fatal(err)
	}
	if md["unit"] != "°C" || md["rate"] != json.Number("9007199254740993") {
		t.Errorf("got %v", md)
	}
	for _, bad := range []string{"", " ", "{", "[1]", `"x"`, "null", "1", `{"a":1} x`, `{"a":1}{}`, "{\"a\":\"\xff\"}", `{"a":}`} {
		if _, err := ParseMetadata([]byte(bad)); Status(err) != StatusInvalid {
			t.Errorf("ParseMetadata(%q): %v", bad, err)
		}
	}
}

func TestParseMetricSet(t *testing.T) {
	got, err := ParseMetricSet([]byte(`["a.b", "c.d"]`))
	if err != nil || len(got) != 2 || got["a.b"] != nil {
		t.Errorf("array: %v, %v", got, err)
	}
	got, err = ParseMetricSet([]byte(`{"a.b": {"unit": "s"}, "c.d": null, "e.f": {}}`))
	if err != nil || len(got) != 3 || got["a.b"]["unit"] != "s" || got["c.d"] != nil || got["e.f"] == nil {
		t.Errorf("object: %v, %v", got, err)
	}
	if got, err := ParseMetricSet([]byte(`[]`)); err != nil || len(got) != 0 {
		t.Errorf("empty: %v, %v", got, err)
	}
	for _, bad := range []string{"", "42", "null", `"a"`, `[1]`, `["a", 2]`, `{"a": 5}`, `{"a": [1]}`, `{"a": "s"}`, `[] []`, "[\"\xff\"]"} {
		if _, err := ParseMetricSet([]byte(bad)); Status(err) != StatusInvalid {
			t.Errorf("ParseMetricSet(%q): %v", bad, err)
		}
	}
	if _, err := ParseMetricSet(nil); Status(err) != StatusInvalid {
		t.Errorf("nil: %v", err)
	}
	// Names are checked by Declare (with the core's rules), not here.
	var _ map[string]libmetricq.Metadata = got
}
