package libmetricq

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateMetricName(t *testing.T) {
	good := []string{"a", "example.counter", "building-F.room-A14.temperature", "test.chunk-size.override", "ünïcode.métric", strings.Repeat("x", 255)}
	for _, name := range good {
		if err := ValidateMetricName(name); err != nil {
			t.Errorf("%q: unexpected error %v", name, err)
		}
	}
	bad := map[string]string{
		"":                       "empty",
		strings.Repeat("x", 256): "bytes",
		strings.Repeat("é", 128): "bytes", // 256 bytes in 128 characters
		"a.*":                    "wildcards",
		"a.#":                    "wildcards",
		"_design.x":              "reserves",
		"bad\xffutf8":            "UTF-8",
	}
	for name, why := range bad {
		err := ValidateMetricName(name)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: got %v, want ErrInvalid", name, err)
			continue
		}
		if !strings.Contains(err.Error(), why) {
			t.Errorf("%q: error %q does not say %q", name, err, why)
		}
		var me *MetricError
		if !errors.As(err, &me) || len(me.Metric) > 90 {
			t.Errorf("%q: want a bounded *MetricError, got %#v", name, err)
		}
	}
}

func TestValidateToken(t *testing.T) {
	if err := validateToken("source-test"); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"", strings.Repeat("t", 252), "\xff"} {
		if err := validateToken(tok); !errors.Is(err, ErrInvalid) {
			t.Errorf("token %q: got %v", tok, err)
		}
	}
}
