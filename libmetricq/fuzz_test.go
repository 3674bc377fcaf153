package libmetricq

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
	"github.com/libmetricq/libmetricq/libmetricq/pb"
)

// Fuzz targets. `go test` runs their seed corpora (testdata/fuzz/<name>/)
// as unit tests; `make fuzz` fuzzes each for a few seconds:
//
//	go test -run '^$' -fuzz '^FuzzIncomingRPC$' -fuzztime 3s ./libmetricq/

// FuzzIncomingRPC feeds arbitrary messages to the management link's
// dispatcher, with the discover and config handlers of a real source and a
// config handler that reads the configuration the way applications do.
// Whatever the body: no panic, every reply is a JSON object, a request with
// a reply_to gets exactly one reply, anything else none.
func FuzzIncomingRPC(f *testing.F) {
	f.Add([]byte(`{"function":"discover"}`), "id-1", "manager-rpc")
	f.Add([]byte(`{"function":"config","rate":5,"nested":{"a":[1,2,3]}}`), "id-2", "manager-rpc")
	f.Add([]byte(`{"function":5}`), "", "x")
	f.Add([]byte(`{"dataServerAddress":"vhost:/"}`), "unknown-correlation", "")
	f.Add([]byte(`[1,2,3]`), "", "q")
	log := slog.New(slog.DiscardHandler)
	handler := func(ctx context.Context, s *Source, config map[string]any) error {
		// What a config handler typically does with its input.
		if rate, ok := config["rate"].(json.Number); ok {
			if _, err := rate.Float64(); err != nil {
				return err
			}
		}
		if name, ok := config["metric"].(string); ok {
			if err := ValidateMetricName(name); err != nil {
				return err
			}
		}
		if fail, ok := config["fail"].(bool); ok && fail {
			return errors.New("refused")
		}
		return nil
	}
	src, err := NewSource("amqp://127.0.0.1/", "fuzz-source", WithLogger(log), WithConfigHandler(handler))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, correlationID, replyTo string) {
		replies := src.DispatchForTest(body, correlationID, replyTo, log)
		for _, r := range replies {
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(r, &obj); err != nil || obj == nil {
				t.Fatalf("reply is not a JSON object: %q", r)
			}
		}
		in := amqpkit.Classify(body, replyTo)
		want := 0
		switch in.Kind {
		case amqpkit.IncomingRequest:
			want = 1
		case amqpkit.IncomingBadRequest:
			if replyTo != "" {
				want = 1
			}
		}
		if len(replies) != want {
			t.Fatalf("%d replies, want %d (kind %d) for %q reply_to %q", len(replies), want, in.Kind, body, replyTo)
		}
		// The reply path of outgoing calls must cope with the same bodies.
		if reply, err := amqpkit.ParseReply("fuzz", body); err == nil && reply == nil {
			t.Fatal("ParseReply returned neither a reply nor an error")
		} else if err != nil && !errors.Is(err, ErrRPC) {
			t.Fatalf("ParseReply error %v does not wrap ErrRPC", err)
		}
	})
}

// FuzzParseTimedelta: no panic; a parsed value prints (PreciseString) to
// text that parses back to it; a leading "-" negates.
func FuzzParseTimedelta(f *testing.F) {
	for _, s := range []string{"1", "0.1s", "-1.5s", ".5 ms", "106751d", "1,25 h", "+3μs", "9223372036854775807ns", "1e3s", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseTimedelta(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%q: error %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		text := d.PreciseString()
		back, err := ParseTimedelta(text)
		if err != nil || back != d {
			t.Fatalf("%q = %d prints as %q, which parses to %d (%v)", s, d, text, back, err)
		}
		trimmed := strings.TrimSpace(s)
		if trimmed != "" && trimmed[0] != '-' && trimmed[0] != '+' {
			neg, err := ParseTimedelta("-" + trimmed)
			if err != nil || neg != -d {
				t.Fatalf("-%q = %d (%v), want %d", trimmed, neg, err, -d)
			}
		}
	})
}

// FuzzValidateMetricName checks ValidateMetricName against the rules
// written out independently, and that its error stays printable.
func FuzzValidateMetricName(f *testing.F) {
	for _, s := range []string{"a", "example.counter", "a.*", "a.#", "_x", "", "\xff", strings.Repeat("é", 128), strings.Repeat("x", 255)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateMetricName(name)
		valid := name != "" && len(name) <= 255 && utf8.ValidString(name) &&
			!strings.ContainsAny(name, "*#\x00") && !strings.HasPrefix(name, "_")
		if valid != (err == nil) {
			t.Fatalf("%q: valid=%v but error %v", name, valid, err)
		}
		if err == nil {
			return
		}
		var me *MetricError
		if !errors.As(err, &me) || !errors.Is(err, ErrInvalid) {
			t.Fatalf("%q: want a *MetricError wrapping ErrInvalid, got %#v", name, err)
		}
		if !utf8.ValidString(err.Error()) || len(me.Metric) > 84 {
			t.Fatalf("%q: error text not printable or unbounded: %q", name, err.Error())
		}
	})
}

// FuzzDataChunk encodes the points read from the input (16 bytes each:
// time, value bits) and checks the bytes against proto.Marshal of the
// generated type and the decoded points against the input; it also
// decodes the raw input as a body, which must never panic.
func FuzzDataChunk(f *testing.F) {
	f.Add(pointBytes([]int64{1700000000000000000, 1700000000100000000}, []float64{1, 2}))
	f.Add(pointBytes([]int64{5, -3, math.MaxInt64, math.MinInt64}, []float64{math.NaN(), math.Inf(1), -0.0, 1e300}))
	f.Add([]byte{0x0a, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		if points, err := DecodeDataChunk(data); err == nil {
			_ = EncodeDataChunk(points)
		} else if !errors.Is(err, ErrInvalid) {
			t.Fatalf("decode error %v does not wrap ErrInvalid", err)
		}
		n := len(data) / 16
		times, values := make([]int64, n), make([]float64, n)
		for i := range n {
			times[i] = int64(binary.LittleEndian.Uint64(data[16*i:]))
			values[i] = math.Float64frombits(binary.LittleEndian.Uint64(data[16*i+8:]))
		}
		got := appendDataChunk(nil, times, values)
		deltas := make([]int64, n)
		var prev int64
		for i, ts := range times {
			deltas[i], prev = ts-prev, ts
		}
		want, err := proto.Marshal(&pb.DataChunk{TimeDelta: deltas, Value: values})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("appendDataChunk %x, proto.Marshal %x", got, want)
		}
		points, err := DecodeDataChunk(got)
		if err != nil || len(points) != n {
			t.Fatalf("decode: %d points, %v", len(points), err)
		}
		for i, p := range points {
			if int64(p.Time) != times[i] || math.Float64bits(p.Value) != math.Float64bits(values[i]) {
				t.Fatalf("point %d: %+v, want %d %v", i, p, times[i], values[i])
			}
		}
	})
}

func pointBytes(times []int64, values []float64) []byte {
	var out []byte
	for i := range times {
		out = binary.LittleEndian.AppendUint64(out, uint64(times[i]))
		out = binary.LittleEndian.AppendUint64(out, math.Float64bits(values[i]))
	}
	return out
}
