package amqpkit

import (
	"errors"
	"fmt"
)

// Error kinds, exported by libmetricq as its own (see libmetricq/errors.go
// for what each means to a source).
var (
	ErrInvalid = errors.New("invalid argument")
	ErrConnect = errors.New("connection failed")
	ErrRPC     = errors.New("rpc failed")
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
