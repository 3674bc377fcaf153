package syncsource

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/libmetricq/libmetricq/libmetricq"
)

// Status codes of the C API (include/metricq.h). 0 is success, every error
// is negative.
const (
	OK               = 0  // MQ_OK
	StatusInvalid    = -1 // MQ_ERR_INVALID
	StatusTimeout    = -2 // MQ_ERR_TIMEOUT
	StatusConnect    = -3 // MQ_ERR_CONNECT
	StatusRPC        = -4 // MQ_ERR_RPC
	StatusUndeclared = -5 // MQ_ERR_UNDECLARED
	StatusOrder      = -6 // MQ_ERR_ORDER
	StatusPublish    = -7 // MQ_ERR_PUBLISH
	StatusStopped    = -8 // MQ_ERR_STOPPED
	StatusInternal   = -9 // MQ_ERR_INTERNAL
)

// ErrInternal marks a contained failure that is a bug (a recovered panic).
var ErrInternal = errors.New("internal error")

// Status maps an error to its C status code. The order matters where an
// error wraps several kinds: a flush that times out while publishing fails
// is MQ_ERR_PUBLISH, a dial that times out MQ_ERR_CONNECT, a call on a
// source that stopped itself because its connection was lost for good
// MQ_ERR_CONNECT; a plain timeout is MQ_ERR_TIMEOUT.
func Status(err error) int {
	var hook *HookError
	switch {
	case err == nil:
		return OK
	case errors.As(err, &hook):
		return hook.status()
	case errors.Is(err, ErrInternal):
		return StatusInternal
	case errors.Is(err, libmetricq.ErrInvalid):
		return StatusInvalid
	case errors.Is(err, libmetricq.ErrUndeclared):
		return StatusUndeclared
	case errors.Is(err, libmetricq.ErrOrder):
		return StatusOrder
	case errors.Is(err, libmetricq.ErrPublish):
		return StatusPublish
	case errors.Is(err, libmetricq.ErrConnect):
		return StatusConnect
	case errors.Is(err, libmetricq.ErrStopped):
		return StatusStopped
	case errors.Is(err, libmetricq.ErrRPC):
		return StatusRPC
	case errors.Is(err, context.DeadlineExceeded):
		return StatusTimeout
	}
	return StatusInternal
}

// HookError is a non-zero return value of a C callback: the configuration
// hook (the configuration is refused: MQ_ERR_RPC) or the IntervalSource
// update function (the source stops: MQ_ERR_STOPPED, except MQ_ERR_PUBLISH,
// which the schedule rides out).
type HookError struct {
	Hook string // "config hook" or "update"
	Code int
}

func (e *HookError) Error() string { return fmt.Sprintf("%s returned %d", e.Hook, e.Code) }

// Unwrap gives the kind the core acts on: ErrPublish for an update that
// returned MQ_ERR_PUBLISH, so that the schedule carries on.
func (e *HookError) Unwrap() error {
	if e.Hook == hookUpdate && e.Code == StatusPublish {
		return libmetricq.ErrPublish
	}
	return nil
}

func (e *HookError) status() int {
	switch {
	case e.Hook == hookConfig:
		return StatusRPC
	case e.Code == StatusPublish:
		return StatusPublish
	}
	return StatusStopped
}

const (
	hookConfig = "config hook"
	hookUpdate = "update"
)

// maxSeconds is the longest time.Duration in seconds, about 292 years.
const maxSeconds = float64(math.MaxInt64) / 1e9

// Timeout converts a C timeout: seconds, finite and > 0. Values beyond
// time.Duration's range are clamped; positive values below 1 ns become 1 ns.
func Timeout(seconds float64) (time.Duration, error) {
	if !(seconds > 0) || math.IsInf(seconds, 1) {
		return 0, fmt.Errorf("%w: timeout must be a finite number of seconds > 0, got %g", libmetricq.ErrInvalid, seconds)
	}
	if seconds >= maxSeconds {
		return time.Duration(math.MaxInt64), nil
	}
	return max(time.Duration(seconds*1e9), time.Nanosecond), nil
}

// Period converts an IntervalSource period: seconds, finite, at least 1 ns.
func Period(seconds float64) (libmetricq.Timedelta, error) {
	if !(seconds > 0) || seconds >= maxSeconds {
		return 0, fmt.Errorf("%w: period must be a finite number of seconds > 0, got %g", libmetricq.ErrInvalid, seconds)
	}
	d := libmetricq.TimedeltaFromSeconds(seconds)
	if d <= 0 {
		return 0, fmt.Errorf("%w: period %g s is below 1 ns", libmetricq.ErrInvalid, seconds)
	}
	return d, nil
}

// invalid builds an ErrInvalid error.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{libmetricq.ErrInvalid}, args...)...)
}
