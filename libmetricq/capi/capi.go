// Command capi is libmetricq's C shared library (go build
// -buildmode=c-shared; see mk/capi.mk). The exported functions implement
// include/metricq.h. They only convert arguments and dispatch to
// libmetricq/syncsource, which holds the logic. The C side: entry_points.c
// is the table of public mq_* functions in front of these libmq_go_*
// exports (a forked child must fail before it enters Go), stage.c keeps
// points in C before they cross (its seam to the core is stage.go),
// registry.c finds a source's stages by name and by metric handle, and
// helpers.c holds the thread-local error text and the callbacks.
//
// Rules every export keeps, by running its work through run (and
// onSource, status, timed or global on top of it): a panic is recovered
// (MQ_ERR_INTERNAL, with the text in mq_last_error), the handle is looked
// up in a table so that a freed or forged handle is MQ_ERR_INVALID, and a
// failure sets the calling thread's mq_last_error (an exported function
// runs on the calling C thread) from a text without the URL's password.
//
// Handles, user pointers and function pointers cross the boundary as
// uintptr_t: Go never holds a foreign value in a pointer-typed variable,
// which the garbage collector could take for a bad Go pointer.
package main

/*
#cgo CFLAGS: -I${SRCDIR}/../../include -O2 -Wall -Wextra
#include <stdlib.h>
#include <string.h>
#include "capi_internal.h"
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"math/bits"
	"time"
	"unsafe"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
	"github.com/libmetricq/libmetricq/libmetricq"
	"github.com/libmetricq/libmetricq/libmetricq/syncsource"
)

func main() {}

var handles syncsource.Handles

var errBadHandle = fmt.Errorf("%w: invalid source handle (NULL, freed or never created)", libmetricq.ErrInvalid)

// versionText lives as long as the library.
var versionText = C.CString(libmetricq.VersionString)

// setLastError sets the calling thread's mq_last_error.
func setLastError(text string) {
	if text == "" {
		C.libmq_set_error(nil, 0)
		return
	}
	C.libmq_set_error((*C.char)(unsafe.Pointer(unsafe.StringData(text))), C.size_t(len(text)))
}

// fail records err for mq_last_error and returns its status. s (may be
// nil) redacts its URL's password.
func fail(s *syncsource.Source, err error) C.int {
	if s != nil {
		setLastError(s.ErrorText(err))
	} else {
		setLastError(err.Error())
	}
	return C.int(syncsource.Status(err))
}

// run is the frame every export's work runs in, so that the rules of the
// package comment are kept in one place: a panic becomes MQ_ERR_INTERNAL
// with its text (no Go panic crosses into C), and a failure sets the
// calling thread's mq_last_error, redacted by *s once op has found its
// source (s may point to nil), and becomes its negative status. op returns
// what C gets on success: a count, a length or 0.
func run(s **syncsource.Source, op func() (int64, error)) (result int64) {
	defer func() {
		if r := recover(); r != nil {
			result = int64(fail(*s, syncsource.PanicError(r)))
		}
	}()
	n, err := op()
	if err != nil {
		return int64(fail(*s, err))
	}
	return n
}

// onSource runs op on the source of a live handle; a freed or forged
// handle is MQ_ERR_INVALID.
func onSource(src C.uintptr_t, op func(s *syncsource.Source) (int64, error)) int64 {
	var s *syncsource.Source
	return run(&s, func() (int64, error) {
		if s = lookup(src); s == nil {
			return 0, errBadHandle
		}
		return op(s)
	})
}

// status is onSource for the exports that return only a status.
func status(src C.uintptr_t, op func(s *syncsource.Source) error) C.int {
	return C.int(onSource(src, func(s *syncsource.Source) (int64, error) { return 0, op(s) }))
}

// timed is status for the exports with a timeout, which is checked first.
func timed(src C.uintptr_t, timeout C.double, op func(s *syncsource.Source, d time.Duration) error) C.int {
	return status(src, func(s *syncsource.Source) error {
		d, err := syncsource.Timeout(float64(timeout))
		if err != nil {
			return err
		}
		return op(s, d)
	})
}

// global is status for the exports that concern no source.
func global(op func() error) C.int {
	var none *syncsource.Source
	return C.int(run(&none, func() (int64, error) { return 0, op() }))
}

func lookup(src C.uintptr_t) *syncsource.Source { return handles.Lookup(uintptr(src)) }

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{libmetricq.ErrInvalid}, args...)...)
}

// borrowName views a C metric name as a Go string without copying: valid
// only during the call. Only the send path uses it (the core looks the
// name up and formats errors with it, both before the call returns). A name
// that has no NUL within 256 bytes is too long, and is not read further.
func borrowName(p *C.char) (string, error) {
	if p == nil {
		return "", invalidf("metric name is NULL")
	}
	base := unsafe.Pointer(p)
	n := nameLength(base)
	if n > libmetricq.MaxNameLength {
		return "", invalidf("bad metric name: longer than %d bytes", libmetricq.MaxNameLength)
	}
	return unsafe.String((*byte)(base), n), nil
}

// nameLength is strlen, stopping after MaxNameLength+1 bytes. Past an
// 8-byte boundary it reads whole aligned words, as C libraries' strlen
// does: an aligned word never crosses into the next page, so no read can
// fault that a byte-wise scan would not.
func nameLength(base unsafe.Pointer) int {
	const limit = libmetricq.MaxNameLength + 1
	n := 0
	if !littleEndian {
		for n < limit && *(*byte)(unsafe.Add(base, n)) != 0 {
			n++
		}
		return n
	}
	for (uintptr(base)+uintptr(n))&7 != 0 {
		if *(*byte)(unsafe.Add(base, n)) == 0 {
			return n
		}
		n++
	}
	for n < limit {
		w := *(*uint64)(unsafe.Add(base, n))
		if zero := (w - 0x0101010101010101) &^ w & 0x8080808080808080; zero != 0 {
			return n + bits.TrailingZeros64(zero)/8
		}
		n += 8
	}
	return n
}

var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// copyString copies a C string; what names the argument in errors.
func copyString(p *C.char, what string) (string, error) {
	if p == nil {
		return "", invalidf("%s is NULL", what)
	}
	return C.GoString(p), nil
}

// copyBytes copies a C string's bytes; nil for NULL.
func copyBytes(p *C.char) ([]byte, error) {
	if p == nil {
		return nil, nil
	}
	n := C.strlen(p)
	if n > math.MaxInt32 {
		return nil, invalidf("string of %d bytes is too long", uint64(n))
	}
	return C.GoBytes(unsafe.Pointer(p), C.int(n)), nil
}

// parseJSON reads a C string (NULL: no text) with parse.
func parseJSON[T any](p *C.char, parse func(text []byte) (T, error)) (T, error) {
	text, err := copyBytes(p)
	if err != nil {
		var none T
		return none, err
	}
	return parse(text)
}

//export libmq_go_version
func libmq_go_version() *C.char { return versionText }

//export libmq_go_source_create
func libmq_go_source_create(url, token *C.char) C.uintptr_t {
	var id uintptr
	global(func() error {
		s, err := create(url, token)
		if err != nil {
			return err
		}
		id = register(s)
		return nil
	})
	return C.uintptr_t(id)
}

// register gives s its handle. When the source stops, for whatever
// reason, the points stage.c holds for it are handed over first.
func register(s *syncsource.Source) uintptr {
	id := handles.Register(s)
	C.libmq_registry_add(C.uintptr_t(id))
	s.SetBeforeStop(func() { collectStaged(s, id) })
	return id
}

// redacted is an error whose text has had the URL's password taken out,
// for the failures that happen before a source exists to redact them.
type redacted struct {
	text string
	err  error
}

func (e redacted) Error() string { return e.text }
func (e redacted) Unwrap() error { return e.err }

func create(url, token *C.char) (*syncsource.Source, error) {
	u, err := copyString(url, "url")
	if err != nil {
		return nil, err
	}
	t, err := copyString(token, "token")
	if err != nil {
		return nil, err
	}
	s, err := syncsource.New(u, t)
	if err != nil {
		return nil, redacted{amqpkit.RedactText(u, err.Error()), err}
	}
	return s, nil
}

//export libmq_go_source_new
func libmq_go_source_new(url, token *C.char, timeout C.double) C.uintptr_t {
	var id uintptr
	global(func() error {
		d, err := syncsource.Timeout(float64(timeout))
		if err != nil {
			return err
		}
		s, err := create(url, token)
		if err != nil {
			return err
		}
		handle := register(s)
		if err := s.Connect(d); err != nil {
			text := s.ErrorText(err)
			handles.Release(handle)
			s.Close(false, false)
			C.libmq_stage_forget(C.uintptr_t(handle))
			return redacted{text, err}
		}
		id = handle
		return nil
	})
	return C.uintptr_t(id)
}

//export libmq_go_source_connect
func libmq_go_source_connect(src C.uintptr_t, timeout C.double) C.int {
	return timed(src, timeout, (*syncsource.Source).Connect)
}

//export libmq_go_source_set_max_buffered
func libmq_go_source_set_max_buffered(src C.uintptr_t, points C.int64_t) C.int {
	return status(src, func(s *syncsource.Source) error { return s.SetMaxBuffered(int64(points)) })
}

//export libmq_go_source_declare
func libmq_go_source_declare(src C.uintptr_t, metric, metadataJSON *C.char, timeout C.double) C.int {
	return timed(src, timeout, func(s *syncsource.Source, d time.Duration) error {
		name, err := copyString(metric, "metric name")
		if err != nil {
			return err
		}
		md, err := parseJSON(metadataJSON, syncsource.ParseMetadata)
		if err != nil {
			return err
		}
		return s.Declare(map[string]libmetricq.Metadata{name: md}, d)
	})
}

//export libmq_go_source_declare_many
func libmq_go_source_declare_many(src C.uintptr_t, metricsJSON *C.char, timeout C.double) C.int {
	return timed(src, timeout, func(s *syncsource.Source, d time.Duration) error {
		if metricsJSON == nil {
			return invalidf("metrics JSON is NULL")
		}
		metrics, err := parseJSON(metricsJSON, syncsource.ParseMetricSet)
		if err != nil {
			return err
		}
		return s.Declare(metrics, d)
	})
}

//export libmq_go_source_set_chunk_size
func libmq_go_source_set_chunk_size(src C.uintptr_t, metric *C.char, chunkSize C.int64_t) C.int {
	return status(src, func(s *syncsource.Source) error {
		var name *string
		if metric != nil {
			n := C.GoString(metric)
			name = &n
		}
		return s.SetChunkSize(name, int64(chunkSize))
	})
}

//export libmq_go_source_send
func libmq_go_source_send(src C.uintptr_t, metric *C.char, timeNs C.int64_t, value C.double, timeout C.double) C.int {
	return timed(src, timeout, func(s *syncsource.Source, d time.Duration) error {
		name, err := borrowName(metric)
		if err != nil {
			return err
		}
		return s.Send(name, int64(timeNs), float64(value), d)
	})
}

// maxBatch bounds count before it becomes a slice length.
const maxBatch = 1 << 40

//export libmq_go_source_send_batch
func libmq_go_source_send_batch(src C.uintptr_t, metric *C.char, timeNs *C.int64_t, values *C.double, count C.size_t, timeout C.double) C.int {
	return timed(src, timeout, func(s *syncsource.Source, d time.Duration) error {
		name, times, vals, err := namedPoints(metric, timeNs, values, count)
		if err != nil {
			return err
		}
		return s.SendBatch(name, times, vals, d)
	})
}

// namedPoints is borrowName and points.
func namedPoints(metric *C.char, timeNs *C.int64_t, values *C.double, count C.size_t) (string, []libmetricq.Timestamp, []float64, error) {
	name, err := borrowName(metric)
	if err != nil {
		return "", nil, nil, err
	}
	times, vals, err := points(timeNs, values, count)
	return name, times, vals, err
}

// points views count C points as Go slices, without copying: valid only
// during the call.
func points(timeNs *C.int64_t, values *C.double, count C.size_t) ([]libmetricq.Timestamp, []float64, error) {
	if count > maxBatch {
		return nil, nil, invalidf("batch of %d points is too large", uint64(count))
	}
	if count == 0 {
		return nil, nil, nil
	}
	if timeNs == nil || values == nil {
		return nil, nil, invalidf("time_ns or values is NULL")
	}
	return unsafe.Slice((*libmetricq.Timestamp)(unsafe.Pointer(timeNs)), int(count)),
		unsafe.Slice((*float64)(unsafe.Pointer(values)), int(count)), nil
}

//export libmq_go_source_flush
func libmq_go_source_flush(src C.uintptr_t, timeout C.double) C.int {
	return timed(src, timeout, (*syncsource.Source).Flush)
}

//export libmq_go_source_config
func libmq_go_source_config(src C.uintptr_t, buf *C.char, size C.size_t) C.int {
	return C.int(onSource(src, func(s *syncsource.Source) (int64, error) {
		if buf == nil && size > 0 {
			return 0, invalidf("buf is NULL but size is %d", uint64(size))
		}
		text, err := s.Config()
		if err != nil {
			return 0, err
		}
		if len(text) > math.MaxInt32 {
			return 0, fmt.Errorf("%w: configuration of %d bytes does not fit an int", syncsource.ErrInternal, len(text))
		}
		if size > 0 {
			n := min(uint64(len(text)), uint64(size)-1)
			out := unsafe.Slice((*byte)(unsafe.Pointer(buf)), n+1)
			copy(out, text[:n])
			out[n] = 0
		}
		return int64(len(text)), nil
	}))
}

//export libmq_go_source_stop
func libmq_go_source_stop(src C.uintptr_t, timeout C.double) C.int {
	return timed(src, timeout, func(s *syncsource.Source, d time.Duration) error {
		if C.libmq_in_config() == src {
			return invalidf("mq_source_stop called from the source's configuration hook: it would wait for the hook; return non-zero from the hook, or stop from another thread")
		}
		return s.Stop(d, C.libmq_in_update() == src)
	})
}

//export libmq_go_source_free
func libmq_go_source_free(src C.uintptr_t) {
	global(func() error {
		if src == 0 {
			return nil
		}
		s := handles.Release(uintptr(src))
		if s == nil {
			return errBadHandle
		}
		s.Close(C.libmq_in_update() == src, C.libmq_in_config() == src)
		return nil
	})
}

//export libmq_go_source_set_config_handler
func libmq_go_source_set_config_handler(src C.uintptr_t, fn C.uintptr_t, user C.uintptr_t) C.int {
	return status(src, func(s *syncsource.Source) error {
		if fn == 0 {
			s.SetConfigHook(nil)
			return nil
		}
		s.SetConfigHook(func(config []byte) int {
			text := C.CString(string(config))
			defer C.free(unsafe.Pointer(text))
			return int(C.libmq_call_config(fn, src, text, user))
		})
		return nil
	})
}

//export libmq_go_source_run_interval
func libmq_go_source_run_interval(src C.uintptr_t, period C.double, fn C.uintptr_t, user C.uintptr_t) C.int {
	return status(src, func(s *syncsource.Source) error {
		if fn == 0 {
			return invalidf("update function is NULL")
		}
		return s.RunInterval(float64(period), func() int {
			return int(C.libmq_call_update(fn, src, user))
		})
	})
}

//export libmq_go_source_set_period
func libmq_go_source_set_period(src C.uintptr_t, period C.double) C.int {
	return status(src, func(s *syncsource.Source) error { return s.SetPeriod(float64(period)) })
}

//export libmq_go_source_stats
func libmq_go_source_stats(src C.uintptr_t, out unsafe.Pointer, size C.size_t) C.int {
	return status(src, func(s *syncsource.Source) error {
		if out == nil {
			return invalidf("stats is NULL")
		}
		st := s.Stats()
		flag := func(b bool) C.uint64_t {
			if b {
				return 1
			}
			return 0
		}
		values := [C.LIBMQ_STATS_FIELDS]C.uint64_t{
			C.uint64_t(st.PointsAccepted), C.uint64_t(st.PointsPublished), C.uint64_t(st.PointsConfirmed),
			C.uint64_t(st.ChunksPublished), C.uint64_t(st.ChunksConfirmed), C.uint64_t(st.BytesPublished),
			C.uint64_t(st.BufferedPoints), C.uint64_t(st.Reconnects), C.uint64_t(st.PublishErrors),
			C.uint64_t(st.BufferFullWaits), C.uint64_t(st.BlockedEvents), flag(st.Blocked),
			C.uint64_t(st.ChunksRepublished), C.uint64_t(st.BufferFullTimeouts), C.uint64_t(st.PointsDropped),
			C.uint64_t(st.ManagementReconnects), flag(st.DataConnected), flag(st.ManagementConnected),
		}
		C.libmq_fill_stats(out, size, &values[0])
		return nil
	})
}

// Log levels of the C API (MQ_LOG_*).
const (
	logDebug = 10
	logInfo  = 20
	logWarn  = 30
	logError = 40
	logOff   = 100
)

func cLevel(l slog.Level) C.int {
	switch {
	case l < slog.LevelInfo:
		return logDebug
	case l < slog.LevelWarn:
		return logInfo
	case l < slog.LevelError:
		return logWarn
	}
	return logError
}

//export libmq_go_set_log_handler
func libmq_go_set_log_handler(fn C.uintptr_t, user C.uintptr_t) {
	global(func() error {
		if fn == 0 {
			syncsource.SetLogHook(nil)
			return nil
		}
		syncsource.SetLogHook(func(level slog.Level, line string) {
			text := C.CString(line)
			defer C.free(unsafe.Pointer(text))
			C.libmq_call_log(fn, cLevel(level), text, user)
		})
		return nil
	})
}

//export libmq_go_set_log_level
func libmq_go_set_log_level(level C.int) C.int {
	return global(func() error {
		var l slog.Level
		switch level {
		case logDebug:
			l = slog.LevelDebug
		case logInfo:
			l = slog.LevelInfo
		case logWarn:
			l = slog.LevelWarn
		case logError:
			l = slog.LevelError
		case logOff:
			l = syncsource.LevelOff
		default:
			return invalidf("log level %d: use MQ_LOG_DEBUG, _INFO, _WARN, _ERROR or _OFF", int(level))
		}
		syncsource.SetLogLevel(l)
		return nil
	})
}
