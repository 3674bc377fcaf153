package libmetricq

import (
	"fmt"
	"math"
	"math/bits"
	"strings"
	"time"
	"unicode"
)

// Timestamp is a point in time: nanoseconds since the Unix epoch, UTC, POSIX
// time without leap seconds. It is the time format of the MetricQ wire
// protocol.
type Timestamp int64

// Timedelta is a signed duration in nanoseconds.
type Timedelta int64

// Common durations.
const (
	Nanosecond  Timedelta = 1
	Microsecond           = 1000 * Nanosecond
	Millisecond           = 1000 * Microsecond
	Second                = 1000 * Millisecond
	Minute                = 60 * Second
	Hour                  = 60 * Minute
	Day                   = 24 * Hour
)

// Now returns the current wall-clock time with full nanosecond resolution.
func Now() Timestamp { return Timestamp(time.Now().UnixNano()) }

// TimestampFromTime converts a time.Time.
func TimestampFromTime(t time.Time) Timestamp { return Timestamp(t.UnixNano()) }

// TimestampFromPosixSeconds converts float seconds since the epoch, truncating
// toward zero as the reference does.
func TimestampFromPosixSeconds(s float64) Timestamp { return Timestamp(int64(s * 1e9)) }

// ParseTimestamp reads an ISO-8601/RFC 3339 time with a zone offset. A time
// without an offset is refused: its meaning would depend on the host's zone.
func ParseTimestamp(s string) (Timestamp, error) {
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%w: timestamp %q: need ISO-8601 with a zone offset: %v", ErrInvalid, s, err)
	}
	return TimestampFromTime(t), nil
}

// Time converts to a time.Time in UTC.
func (t Timestamp) Time() time.Time { return time.Unix(0, int64(t)).UTC() }

// PosixSeconds returns float seconds since the epoch.
func (t Timestamp) PosixSeconds() float64 { return float64(t) / 1e9 }

// Add returns t+d.
func (t Timestamp) Add(d Timedelta) Timestamp { return t + Timestamp(d) }

// Sub returns t-u.
func (t Timestamp) Sub(u Timestamp) Timedelta { return Timedelta(t - u) }

// String gives RFC 3339 with nanoseconds, in UTC.
func (t Timestamp) String() string { return t.Time().Format(time.RFC3339Nano) }

// isoString is the reference's datetime.isoformat(): microseconds, "+00:00",
// and no fraction when the microseconds are zero. Discover replies use it so
// that tools parsing Python's format read ours.
func (t Timestamp) isoString() string {
	tt := t.Time()
	if tt.Nanosecond()/1000 == 0 {
		return tt.Format("2006-01-02T15:04:05+00:00")
	}
	return tt.Format("2006-01-02T15:04:05.000000+00:00")
}

// TimedeltaFromDuration converts a time.Duration (also int64 ns).
func TimedeltaFromDuration(d time.Duration) Timedelta { return Timedelta(d) }

// TimedeltaFromSeconds converts float seconds, truncating toward zero.
func TimedeltaFromSeconds(s float64) Timedelta { return Timedelta(int64(s * 1e9)) }

// Duration converts to a time.Duration.
func (d Timedelta) Duration() time.Duration { return time.Duration(d) }

// Seconds returns the duration in float seconds.
func (d Timedelta) Seconds() float64 { return float64(d) / 1e9 }

// preciseUnits is ordered from the largest unit down so that PreciseString
// picks the largest one dividing the value exactly.
var preciseUnits = []struct {
	name string
	size Timedelta
}{
	{"d", Day}, {"h", Hour}, {"min", Minute}, {"s", Second},
	{"ms", Millisecond}, {"μs", Microsecond}, {"ns", Nanosecond},
}

// PreciseString writes the value in the largest unit that divides it exactly,
// e.g. "3s", "100ms", "90min". The result parses back to the same value. It
// is what the metadata key "interval" should hold.
func (d Timedelta) PreciseString() string {
	if d == 0 {
		return "0s"
	}
	for _, u := range preciseUnits {
		if d%u.size == 0 {
			return fmt.Sprintf("%d%s", int64(d/u.size), u.name)
		}
	}
	panic("unreachable: every value is a whole number of ns")
}

// String is PreciseString.
func (d Timedelta) String() string { return d.PreciseString() }

var timedeltaUnits = map[string]Timedelta{
	"": Second, "s": Second, "second": Second, "seconds": Second,
	"ms": Millisecond, "millisecond": Millisecond, "milliseconds": Millisecond,
	"us": Microsecond, "microsecond": Microsecond, "microseconds": Microsecond,
	"μs": Microsecond, "µs": Microsecond, // U+03BC as the reference; U+00B5 as keyboards type it
	"ns": Nanosecond, "nanosecond": Nanosecond, "nanoseconds": Nanosecond,
	"min": Minute, "minute": Minute, "minutes": Minute,
	"h": Hour, "hour": Hour, "hours": Hour,
	"d": Day, "day": Day, "days": Day,
}

// ParseTimedelta reads "<number><unit>" as the reference Timedelta.from_string
// does: optional spaces and sign, a decimal number with "." or "," as the
// fraction separator, then a unit (none means seconds). Unlike the reference
// it accepts ".5s", applies the sign to the fraction too ("-1.5s" is -1.5 s)
// and computes in integers, so "0.1s" is exactly 100000000 ns. The result is
// truncated toward zero; values beyond ±292 years are refused.
func ParseTimedelta(s string) (Timedelta, error) {
	bad := func(why string) (Timedelta, error) {
		return 0, fmt.Errorf("%w: timedelta %q: %s", ErrInvalid, s, why)
	}
	rest := strings.TrimSpace(s)
	negative := false
	if rest != "" && (rest[0] == '+' || rest[0] == '-') {
		negative = rest[0] == '-'
		rest = rest[1:]
	}
	intEnd := 0
	for intEnd < len(rest) && rest[intEnd] >= '0' && rest[intEnd] <= '9' {
		intEnd++
	}
	intDigits, rest := rest[:intEnd], rest[intEnd:]
	fracDigits := ""
	if rest != "" && (rest[0] == '.' || rest[0] == ',') {
		fracEnd := 1
		for fracEnd < len(rest) && rest[fracEnd] >= '0' && rest[fracEnd] <= '9' {
			fracEnd++
		}
		fracDigits, rest = rest[1:fracEnd], rest[fracEnd:]
	}
	if intDigits == "" && fracDigits == "" {
		return bad("no number")
	}
	unitName := strings.TrimFunc(rest, unicode.IsSpace)
	unit, ok := timedeltaUnits[unitName]
	if !ok {
		return bad(fmt.Sprintf("unknown unit %q (use ns, us, μs, ms, s, min, h, d or their long names)", unitName))
	}
	var whole int64
	for _, c := range intDigits {
		digit := int64(c - '0')
		if whole > (math.MaxInt64-digit)/10 {
			return bad("out of range")
		}
		whole = whole*10 + digit
	}
	if whole > math.MaxInt64/int64(unit) {
		return bad("out of range")
	}
	total := whole * int64(unit)
	// Only the digits that can still change the result matter: a unit is at
	// most 8.64e13 ns, so 14 fractional digits reach below one nanosecond.
	if len(fracDigits) > 14 {
		fracDigits = fracDigits[:14]
	}
	var frac, scale int64 = 0, 1
	for _, c := range fracDigits {
		frac = frac*10 + int64(c-'0')
		scale *= 10
	}
	// frac*unit can exceed int64 (14 digits × 8.64e13), so split the unit.
	fracNs := (frac/scale)*int64(unit) + mulDiv(frac%scale, int64(unit), scale)
	if total > math.MaxInt64-fracNs {
		return bad("out of range")
	}
	total += fracNs
	if negative {
		total = -total
	}
	return Timedelta(total), nil
}

// mulDiv returns a*b/c for 0 <= a < c without intermediate overflow.
func mulDiv(a, b, c int64) int64 {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	q, _ := bits.Div64(hi, lo, uint64(c))
	return int64(q)
}
