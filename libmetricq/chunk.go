package libmetricq

import (
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/libmetricq/libmetricq/libmetricq/pb"
)

// Point is one timestamped value of a metric.
type Point struct {
	Time  Timestamp
	Value float64
}

// appendDataChunk encodes a DataChunk whose points have the absolute
// timestamps times. It writes exactly the bytes proto.Marshal of pb.DataChunk
// gives (packed fields in field order, the first delta absolute, negative
// deltas as 10-byte varints), but into dst, with no allocation when dst has
// room. The publisher runs it once per chunk.
func appendDataChunk(dst []byte, times []int64, values []float64) []byte {
	if len(times) == 0 {
		return dst
	}
	deltaBytes := 0
	var previous int64
	for _, t := range times {
		deltaBytes += protowire.SizeVarint(uint64(t - previous))
		previous = t
	}
	dst = protowire.AppendTag(dst, 1, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(deltaBytes))
	previous = 0
	for _, t := range times {
		dst = protowire.AppendVarint(dst, uint64(t-previous))
		previous = t
	}
	dst = protowire.AppendTag(dst, 2, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(8*len(values)))
	for _, v := range values {
		dst = protowire.AppendFixed64(dst, math.Float64bits(v))
	}
	return dst
}

// EncodeDataChunk returns the wire form of points, as a MetricQ Source
// publishes them.
func EncodeDataChunk(points []Point) []byte {
	times := make([]int64, len(points))
	values := make([]float64, len(points))
	for i, p := range points {
		times[i], values[i] = int64(p.Time), p.Value
	}
	return appendDataChunk(nil, times, values)
}

// DecodeDataChunk reads a DataChunk body as a sink does: a running sum of the
// deltas, starting at zero in every message. Packed and unpacked encodings
// are both accepted.
func DecodeDataChunk(body []byte) ([]Point, error) {
	var chunk pb.DataChunk
	if err := proto.Unmarshal(body, &chunk); err != nil {
		return nil, fmt.Errorf("%w: DataChunk: %v", ErrInvalid, err)
	}
	if len(chunk.TimeDelta) != len(chunk.Value) {
		return nil, fmt.Errorf("%w: DataChunk has %d time deltas but %d values", ErrInvalid, len(chunk.TimeDelta), len(chunk.Value))
	}
	points := make([]Point, len(chunk.Value))
	var t int64
	for i, d := range chunk.TimeDelta {
		t += d
		points[i] = Point{Time: Timestamp(t), Value: chunk.Value[i]}
	}
	return points, nil
}
