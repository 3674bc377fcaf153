package libmetricq

import (
	"errors"
	"fmt"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
)

// Error kinds. Every error this package returns wraps exactly one of them, so
// callers (and the C library's status codes) can tell them apart with
// errors.Is. Timeouts wrap context.DeadlineExceeded instead. The kinds that
// connections and RPCs give are the AMQP toolkit's, so that its errors are
// this package's.
var (
	// ErrInvalid: a bad argument (name, metadata, chunk size, period, URL).
	ErrInvalid = amqpkit.ErrInvalid
	// ErrUndeclared: Send for a metric this source never declared.
	ErrUndeclared = errors.New("metric not declared")
	// ErrOrder: a timestamp not strictly greater than the metric's last one.
	ErrOrder = errors.New("timestamp not strictly increasing")
	// ErrStopped: the source was stopped (or failed and stopped itself).
	ErrStopped = errors.New("source stopped")
	// ErrPublish: publishing failed; accepted points stay buffered.
	ErrPublish = errors.New("publish failed")
	// ErrConnect: the broker is unreachable, refused the login, or the
	// connection was lost and could not be restored.
	ErrConnect = amqpkit.ErrConnect
	// ErrRPC: the manager answered with an error or an unreadable reply.
	ErrRPC = amqpkit.ErrRPC
)

// RPCError is an error reply from a MetricQ peer, usually the manager. It
// wraps ErrRPC.
type RPCError = amqpkit.RPCError

// MetricError ties an error kind to the metric it concerns.
type MetricError struct {
	Metric string
	Err    error // one of the kinds above, possibly wrapped with detail
}

func (e *MetricError) Error() string { return fmt.Sprintf("metric %q: %v", e.Metric, e.Err) }

// Unwrap exposes the kind to errors.Is.
func (e *MetricError) Unwrap() error { return e.Err }
