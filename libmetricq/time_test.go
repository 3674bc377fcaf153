package libmetricq

import (
	"errors"
	"math"
	"testing"
	"time"
)

func TestParseTimedeltaUnits(t *testing.T) {
	cases := map[string]Timedelta{
		"1":                  Second,
		"2s":                 2 * Second,
		"3 second":           3 * Second,
		"4seconds":           4 * Second,
		"5ms":                5 * Millisecond,
		"6 millisecond":      6 * Millisecond,
		"7 milliseconds":     7 * Millisecond,
		"8us":                8 * Microsecond,
		"9microsecond":       9 * Microsecond,
		"10 microseconds":    10 * Microsecond,
		"11μs":               11 * Microsecond,
		"12µs":               12 * Microsecond,
		"13ns":               13,
		"14 nanosecond":      14,
		"15 nanoseconds":     15,
		"16min":              16 * Minute,
		"17 minute":          17 * Minute,
		"18 minutes":         18 * Minute,
		"19h":                19 * Hour,
		"20 hour":            20 * Hour,
		"21 hours":           21 * Hour,
		"22d":                22 * Day,
		"23 day":             23 * Day,
		"24 days":            24 * Day,
		"  0.1s  ":           100 * Millisecond,
		"0,25 s":             250 * Millisecond,
		".5s":                500 * Millisecond,
		"1.":                 Second,
		"+3ms":               3 * Millisecond,
		"-1.5s":              -1500 * Millisecond,
		"1.9ns":              1, // truncated toward zero
		"-1.9ns":             -1,
		"0.000000001s":       1,
		"1.123456789123456s": 1123456789,
		"106751d":            106751 * Day,
	}
	for in, want := range cases {
		got, err := ParseTimedelta(in)
		if err != nil {
			t.Errorf("ParseTimedelta(%q): %v", in, err)
			continue
		}
		if got != want {
			t.Errorf("ParseTimedelta(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestParseTimedeltaRejects(t *testing.T) {
	for _, in := range []string{"", " ", "s", "abc", "1x", "1 sec", "1e3s", "1.2.3s", "--1s", "1 s s", "5m", "106752d", "99999999999999999999ns", "1s5"} {
		if d, err := ParseTimedelta(in); err == nil {
			t.Errorf("ParseTimedelta(%q) = %d, want an error", in, d)
		} else if !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseTimedelta(%q) error %v does not wrap ErrInvalid", in, err)
		}
	}
}

func TestPreciseStringRoundTrips(t *testing.T) {
	cases := map[Timedelta]string{
		0:                        "0s",
		3 * Second:               "3s",
		100 * Millisecond:        "100ms",
		1500 * Microsecond:       "1500μs",
		7:                        "7ns",
		90 * Minute:              "90min",
		2 * Hour:                 "2h",
		-Day:                     "-1d",
		Day + Nanosecond:         "86400000000001ns",
		Timedelta(math.MaxInt64): "9223372036854775807ns",
	}
	for d, want := range cases {
		if got := d.PreciseString(); got != want {
			t.Errorf("%d.PreciseString() = %q, want %q", int64(d), got, want)
		}
		back, err := ParseTimedelta(want)
		if err != nil || back != d {
			t.Errorf("ParseTimedelta(%q) = %d, %v; want %d", want, back, err, d)
		}
	}
}

func TestTimestampConversions(t *testing.T) {
	ts := TimestampFromPosixSeconds(1700000000.5)
	if ts != 1700000000500000000 {
		t.Fatalf("from posix seconds: %d", ts)
	}
	if got := ts.Time(); !got.Equal(time.Unix(1700000000, 500000000)) || got.Location() != time.UTC {
		t.Fatalf("Time() = %v", got)
	}
	if ts.PosixSeconds() != 1700000000.5 {
		t.Fatalf("PosixSeconds() = %v", ts.PosixSeconds())
	}
	if ts.Add(Second).Sub(ts) != Second {
		t.Fatal("Add/Sub disagree")
	}
	if got := ts.isoString(); got != "2023-11-14T22:13:20.500000+00:00" {
		t.Fatalf("isoString() = %q", got)
	}
	if got := Timestamp(1700000000000000000).isoString(); got != "2023-11-14T22:13:20+00:00" {
		t.Fatalf("isoString() without fraction = %q", got)
	}
	parsed, err := ParseTimestamp("2023-11-14T23:13:20.5+01:00")
	if err != nil || parsed != ts {
		t.Fatalf("ParseTimestamp = %d, %v", parsed, err)
	}
	if _, err := ParseTimestamp("2023-11-14T22:13:20"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a naive time must be refused, got %v", err)
	}
	before := time.Now().UnixNano()
	now := Now()
	if int64(now) < before || int64(now) > time.Now().UnixNano() {
		t.Fatalf("Now() = %d outside the wall clock", now)
	}
}
