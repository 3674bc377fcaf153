package main

// The seam between the C stage (stage.c) and the core: the hand-over that
// returns the fresh facts (a lease), the sends and waits for what does not
// fit a lease, and the one hook from Go into C, when the source stops.
// The rules themselves are the core's (libmetricq/lease.go).

/*
#include "capi_internal.h"
*/
import "C"

import (
	"errors"
	"time"
	"unsafe"

	"github.com/libmetricq/libmetricq/libmetricq"
	"github.com/libmetricq/libmetricq/libmetricq/syncsource"
)

// libmq_go_stage_handover hands a stage's points to the core and returns,
// in *out, whether they were taken and the metric's next lease with room
// for up to want points (0: the lease's space goes back). A negative
// status says why there is no new lease.
//
//export libmq_go_stage_handover
func libmq_go_stage_handover(src C.uintptr_t, metric *C.char, timeNs *C.int64_t, values *C.double, count C.size_t, want C.int64_t, out *C.libmq_lease) C.int {
	*out = C.libmq_lease{}
	return status(src, func(s *syncsource.Source) error {
		name, times, vals, err := namedPoints(metric, timeNs, values, count)
		if err != nil {
			return err
		}
		taken, lease, err := s.HandOver(name, times, vals, int(want))
		*out = C.libmq_lease{room: C.int64_t(lease.Room), after: C.int64_t(lease.After)}
		if lease.HasAfter {
			out.has_after = 1
		}
		if taken == len(times) {
			out.taken = 1
		}
		return err
	})
}

// noRoom is libmq_go_stage_send's answer when the points' buffer space is
// neither leased nor free: wait for it with libmq_go_stage_await.
const noRoom = 1

// libmq_go_stage_send accepts points a stage did not stage (a batch, or a
// point that does not follow its lease), checked as any batch: 0, noRoom,
// or a negative status.
//
//export libmq_go_stage_send
func libmq_go_stage_send(src C.uintptr_t, metric *C.char, timeNs *C.int64_t, values *C.double, count C.size_t) C.int {
	return C.int(onSource(src, func(s *syncsource.Source) (int64, error) {
		name, times, vals, err := namedPoints(metric, timeNs, values, count)
		if err != nil {
			return 0, err
		}
		if err := s.SendLeased(name, times, vals); errors.Is(err, libmetricq.ErrNoRoom) {
			return noRoom, nil
		} else if err != nil {
			return 0, err
		}
		return 0, nil
	}))
}

// libmq_go_stage_await reserves buffer space for n points of a metric's
// lease, waiting up to timeout.
//
//export libmq_go_stage_await
func libmq_go_stage_await(src C.uintptr_t, metric *C.char, n C.int64_t, timeout C.double) C.int {
	return timed(src, timeout, func(s *syncsource.Source, d time.Duration) error {
		name, err := borrowName(metric)
		if err != nil {
			return err
		}
		return s.AwaitRoom(name, int(n), d)
	})
}

// libmq_go_stage_check_name checks a source handle and a metric name for
// a metric handle (mq_source_metric); the metric need not be declared.
//
//export libmq_go_stage_check_name
func libmq_go_stage_check_name(src C.uintptr_t, metric *C.char) C.int {
	return status(src, func(*syncsource.Source) error {
		name, err := borrowName(metric)
		if err != nil {
			return err
		}
		return libmetricq.ValidateMetricName(name)
	})
}

// collectStaged runs when the source stops, after it stopped taking new
// points: the stages close, and the points they hold go to the core. It
// runs on a goroutine of the core's stop, so a panic is contained here.
func collectStaged(s *syncsource.Source, id uintptr) {
	defer func() { _ = recover() }()
	list := C.libmq_stage_close(C.uintptr_t(id))
	if list == nil {
		return
	}
	defer C.libmq_stage_collected(list)
	for _, b := range unsafe.Slice(list.batches, int(list.count)) {
		times, vals, _ := points(b.times, b.values, b.count)
		// Staged points are always taken; the error is about a new lease,
		// which a stopped source does not give.
		_, _, _ = s.HandOver(C.GoString(b.metric), times, vals, 0)
	}
}
