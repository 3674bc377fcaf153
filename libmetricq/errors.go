package libmetricq

import (
	"errors"
	"fmt"
)

// Error kinds. Every error this package returns wraps exactly one of them, so
// callers (and the C library's status codes) can tell them apart with
// errors.Is. Timeouts wrap context.DeadlineExceeded instead.
var (
	// ErrInvalid: a bad argument (name, metadata, chunk size, period, URL).
	ErrInvalid = errors.New("invalid argument")
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
	ErrConnect = errors.New("connection failed")
	// ErrRPC: the manager answered with an error or an unreadable reply.
	ErrRPC = errors.New("rpc failed")
)

// RPCError is an error reply from a MetricQ peer, usually the manager. It
// wraps ErrRPC.
type RPCError struct {
	Function string // the RPC that failed, e.g. "source.register"
	Message  string // the peer's "error" text
}

func (e *RPCError) Error() string {
	return fmt.Sprintf("rpc %s: manager replied with an error: %s", e.Function, e.Message)
}

// Unwrap lets errors.Is(err, ErrRPC) hold.
func (e *RPCError) Unwrap() error { return ErrRPC }

// MetricError ties an error kind to the metric it concerns.
type MetricError struct {
	Metric string
	Err    error // one of the kinds above, possibly wrapped with detail
}

func (e *MetricError) Error() string { return fmt.Sprintf("metric %q: %v", e.Metric, e.Err) }

// Unwrap exposes the kind to errors.Is.
func (e *MetricError) Unwrap() error { return e.Err }
