package libmetricq

import (
	"bytes"
	"encoding/hex"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/libmetricq/libmetricq/libmetricq/pb"
)

// The three vectors of PROTOCOL §5.3.
var chunkVectors = []struct {
	name   string
	times  []int64
	values []float64
	hex    string
}{
	{"three points", []int64{1700000000000000000, 1700000000100000000, 1700000000200000000}, []float64{1, 2, 3.5},
		"0a118080a8b1e39fe7cb1780c2d72f80c2d72f1218000000000000f03f00000000000000400000000000000c40"},
	{"single point", []int64{1700000000000000000}, []float64{42},
		"0a098080a8b1e39fe7cb1712080000000000004540"},
	{"negative delta", []int64{1700000000000000000, 1699999999999999995}, []float64{1, 2},
		"0a138080a8b1e39fe7cb17fbffffffffffffffff011210000000000000f03f0000000000000040"},
}

func TestDataChunkVectors(t *testing.T) {
	for _, v := range chunkVectors {
		want, _ := hex.DecodeString(v.hex)
		got := appendDataChunk(nil, v.times, v.values)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: got %x, want %s", v.name, got, v.hex)
		}
		// The generated code must agree byte for byte.
		deltas := make([]int64, len(v.times))
		var prev int64
		for i, ts := range v.times {
			deltas[i], prev = ts-prev, ts
		}
		marshalled, err := proto.Marshal(&pb.DataChunk{TimeDelta: deltas, Value: v.values})
		if err != nil || !bytes.Equal(marshalled, want) {
			t.Errorf("%s: proto.Marshal gives %x (%v)", v.name, marshalled, err)
		}
		points, err := DecodeDataChunk(want)
		if err != nil {
			t.Fatalf("%s: decode: %v", v.name, err)
		}
		for i, p := range points {
			if int64(p.Time) != v.times[i] || p.Value != v.values[i] {
				t.Errorf("%s: point %d = %+v", v.name, i, p)
			}
		}
	}
}

func TestAppendDataChunkReusesBuffer(t *testing.T) {
	buf := make([]byte, 0, 256)
	out := appendDataChunk(buf, []int64{5, 7}, []float64{math.NaN(), math.Inf(-1)})
	if &out[0] != &buf[:1][0] {
		t.Fatal("appendDataChunk allocated although the buffer had room")
	}
	points, err := DecodeDataChunk(out)
	if err != nil || !math.IsNaN(points[0].Value) || !math.IsInf(points[1].Value, -1) || points[1].Time != 7 {
		t.Fatalf("NaN and Inf must survive: %+v %v", points, err)
	}
	allocs := testing.AllocsPerRun(100, func() { buf = appendDataChunk(buf[:0], []int64{5, 7}, []float64{1, 2}) })
	if allocs != 0 {
		t.Fatalf("appendDataChunk allocates %v times per chunk", allocs)
	}
}

func TestDecodeAcceptsUnpackedAndRejectsGarbage(t *testing.T) {
	// time_delta=1 (varint, unpacked) twice, value=2 (fixed64, unpacked) twice.
	unpacked, _ := hex.DecodeString("080a0805" + "11000000000000f03f" + "110000000000000040")
	points, err := DecodeDataChunk(unpacked)
	if err != nil || len(points) != 2 || points[0].Time != 10 || points[1].Time != 15 || points[1].Value != 2 {
		t.Fatalf("unpacked: %+v %v", points, err)
	}
	for _, body := range [][]byte{{0x0a, 0xff}, {0x0a, 0x01, 0x01}} {
		if _, err := DecodeDataChunk(body); err == nil {
			t.Errorf("%x: want an error", body)
		}
	}
	mismatched := appendDataChunk(nil, []int64{1, 2}, []float64{1})
	if _, err := DecodeDataChunk(mismatched); err == nil {
		t.Error("deltas and values of different lengths must be refused")
	}
}

func TestEncodeDataChunkMatchesVector(t *testing.T) {
	v := chunkVectors[0]
	points := make([]Point, len(v.times))
	for i := range points {
		points[i] = Point{Timestamp(v.times[i]), v.values[i]}
	}
	if got := hex.EncodeToString(EncodeDataChunk(points)); got != v.hex {
		t.Fatalf("EncodeDataChunk = %s", got)
	}
}
