package libmetricq

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sync"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/libmetricq/libmetricq/libmetricq/pb"
)

// Point is one timestamped value of a metric.
type Point struct {
	Time  Timestamp
	Value float64
}

// chunk is a sealed run of points of one metric, with absolute timestamps;
// the deltas are computed when it is encoded. Once sealed it never changes:
// a republished chunk is byte for byte the chunk published before.
type chunk struct {
	name   string // the metric's
	times  []int64
	values []float64
	seq    uint64 // position in the publisher's queue order
	tag    uint64 // delivery tag on the session that published it last
	again  bool   // published before, confirmation missing
}

// maxPooledCapacity keeps a metric with a huge chunk size from pinning huge
// arrays in the pool.
const maxPooledCapacity = 1 << 16

var chunkPool = sync.Pool{New: func() any { return new(chunk) }}

// newChunk is a chunk of the points times and values, copied.
func newChunk(name string, times []int64, values []float64) *chunk {
	c := pooledChunk(name, len(times))
	copy(c.times, times)
	copy(c.values, values)
	return c
}

// sealedChunk is a chunk of the points, copied.
func sealedChunk(name string, points []Point) *chunk {
	c := pooledChunk(name, len(points))
	times, values := c.times[:len(points)], c.values[:len(points)]
	for i, p := range points {
		times[i], values[i] = int64(p.Time), p.Value
	}
	return c
}

// pooledChunk is a chunk of n points, their values still to be written.
func pooledChunk(name string, n int) *chunk {
	c := chunkPool.Get().(*chunk)
	c.name = name
	if cap(c.times) < n {
		c.times = make([]int64, n)
		c.values = make([]float64, n)
	}
	c.times, c.values = c.times[:n], c.values[:n]
	return c
}

func recycleChunk(c *chunk) {
	if cap(c.times) > maxPooledCapacity {
		return
	}
	c.times, c.values, c.name, c.seq, c.tag, c.again = c.times[:0], c.values[:0], "", 0, 0, false
	chunkPool.Put(c)
}

// appendDataChunk encodes a DataChunk whose points have the absolute
// timestamps times. It writes exactly the bytes proto.Marshal of pb.DataChunk
// gives (packed fields in field order, the first delta absolute, negative
// deltas as 10-byte varints), but into dst, with no allocation when dst has
// room for the worst case (18 bytes a point, plus 17). The publisher runs it
// once per chunk, into a buffer it reuses.
func appendDataChunk(dst []byte, times []int64, values []float64) []byte {
	if len(times) == 0 {
		return dst
	}
	// One pass over the times: the deltas are written after room for the
	// largest field header (tag and a 5-byte length), then moved down to
	// follow the real header, whose length is known only at the end.
	const room = 1 + 5
	valueBytes := 8 * len(values)
	base := len(dst)
	dst = slices.Grow(dst, room+binary.MaxVarintLen64*len(times)+1+binary.MaxVarintLen64+valueBytes)
	out := dst[base+room : base+room+binary.MaxVarintLen64*len(times)]
	i := 0
	var previous int64
	for _, t := range times {
		d := uint64(t - previous)
		previous = t
		for d >= 0x80 {
			out[i] = byte(d) | 0x80
			d >>= 7
			i++
		}
		out[i] = byte(d)
		i++
	}
	dst = protowire.AppendTag(dst, 1, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(i))
	dst = dst[:len(dst)+i]
	copy(dst[len(dst)-i:], out[:i])
	dst = protowire.AppendTag(dst, 2, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(valueBytes))
	if nativeLittleEndian {
		// The packed doubles are the values' memory, byte for byte.
		return append(dst, unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(values))), valueBytes)...)
	}
	for _, v := range values {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
	}
	return dst
}

var nativeLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

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
