package syncsource

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/libmetricq"
)

func TestStatus(t *testing.T) {
	lm := libmetricq.ErrInvalid
	cases := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, OK},
		{"invalid", fmt.Errorf("%w: bad", lm), StatusInvalid},
		{"undeclared", &libmetricq.MetricError{Metric: "a", Err: libmetricq.ErrUndeclared}, StatusUndeclared},
		{"order", &libmetricq.MetricError{Metric: "a", Err: fmt.Errorf("%w: 1 <= 2", libmetricq.ErrOrder)}, StatusOrder},
		{"flush timeout while publishing fails", fmt.Errorf("flush: 2 chunks not confirmed: %w (%w)", fmt.Errorf("%w: nack", libmetricq.ErrPublish), context.DeadlineExceeded), StatusPublish},
		{"dial timeout", fmt.Errorf("%w: dial: %w", libmetricq.ErrConnect, context.DeadlineExceeded), StatusConnect},
		{"stopped: connection lost", fmt.Errorf("%w: %w", libmetricq.ErrStopped, fmt.Errorf("%w: gone", libmetricq.ErrConnect)), StatusConnect},
		{"stopped", libmetricq.ErrStopped, StatusStopped},
		{"rpc", fmt.Errorf("declare: %w", &libmetricq.RPCError{Function: "f", Message: "no"}), StatusRPC},
		{"timeout", fmt.Errorf("rpc x: no reply: %w", context.DeadlineExceeded), StatusTimeout},
		{"buffer full", &libmetricq.MetricError{Metric: "a", Err: fmt.Errorf("buffer full: %w", context.DeadlineExceeded)}, StatusTimeout},
		{"unknown", errors.New("what"), StatusInternal},
		{"canceled", context.Canceled, StatusInternal},
		{"panic", PanicError("boom"), StatusInternal},
		{"config hook", fmt.Errorf("connect: config handler: %w", &HookError{Hook: hookConfig, Code: 7}), StatusRPC},
		{"update", fmt.Errorf("%w: task: update: %w", libmetricq.ErrStopped, &HookError{Hook: hookUpdate, Code: 42}), StatusStopped},
		{"update publish", &HookError{Hook: hookUpdate, Code: StatusPublish}, StatusPublish},
	}
	for _, c := range cases {
		if got := Status(c.err); got != c.want {
			t.Errorf("%s: Status(%v) = %d, want %d", c.name, c.err, got, c.want)
		}
	}
	// The core's schedule rides out ErrPublish: an update returning
	// MQ_ERR_PUBLISH must look like one.
	if !errors.Is(&HookError{Hook: hookUpdate, Code: StatusPublish}, libmetricq.ErrPublish) {
		t.Error("update returning MQ_ERR_PUBLISH is not ErrPublish")
	}
	if errors.Is(&HookError{Hook: hookConfig, Code: StatusPublish}, libmetricq.ErrPublish) {
		t.Error("config hook returning MQ_ERR_PUBLISH is ErrPublish")
	}
}

func TestTimeout(t *testing.T) {
	for _, bad := range []float64{0, -1, math.Copysign(0, -1), math.NaN(), math.Inf(1), math.Inf(-1)} {
		if _, err := Timeout(bad); Status(err) != StatusInvalid {
			t.Errorf("Timeout(%v): %v", bad, err)
		}
	}
	good := map[float64]time.Duration{1: time.Second, 0.25: 250 * time.Millisecond, 1e-12: time.Nanosecond, 1e300: math.MaxInt64, 60: time.Minute}
	for in, want := range good {
		if got, err := Timeout(in); err != nil || got != want {
			t.Errorf("Timeout(%v) = %v, %v; want %v", in, got, err, want)
		}
	}
}

func TestPeriod(t *testing.T) {
	for _, bad := range []float64{0, -1, math.NaN(), math.Inf(1), 1e-12, 1e300} {
		if _, err := Period(bad); Status(err) != StatusInvalid {
			t.Errorf("Period(%v): %v", bad, err)
		}
	}
	if got, err := Period(0.1); err != nil || got != 100*libmetricq.Millisecond {
		t.Errorf("Period(0.1) = %v, %v", got, err)
	}
}
