package amqpkit

import (
	"testing"
	"time"
)

func TestISOTime(t *testing.T) {
	for _, tc := range []struct {
		t    time.Time
		want string
	}{
		{time.Date(2024, 5, 1, 12, 0, 0, 123456789, time.UTC), "2024-05-01T12:00:00.123456+00:00"},
		{time.Date(2024, 5, 1, 12, 0, 0, 999, time.UTC), "2024-05-01T12:00:00+00:00"},
		{time.Date(2024, 5, 1, 14, 0, 0, 1000, time.FixedZone("x", 7200)), "2024-05-01T12:00:00.000001+00:00"},
	} {
		if got := ISOTime(tc.t); got != tc.want {
			t.Errorf("ISOTime(%v) = %q, want %q", tc.t, got, tc.want)
		}
	}
}
