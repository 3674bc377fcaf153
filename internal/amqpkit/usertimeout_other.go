//go:build !linux

package amqpkit

import (
	"syscall"
	"time"
)

// giveUpUnacknowledged has no portable equivalent of Linux's
// TCP_USER_TIMEOUT; the heartbeat and the write deadlines remain.
func giveUpUnacknowledged(time.Duration) func(network, address string, c syscall.RawConn) error {
	return nil
}
