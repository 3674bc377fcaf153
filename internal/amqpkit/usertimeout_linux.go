package amqpkit

import (
	"syscall"
	"time"
)

// tcpUserTimeout is TCP_USER_TIMEOUT (linux/tcp.h), which package syscall
// does not name.
const tcpUserTimeout = 0x12

// giveUpUnacknowledged makes the kernel end the connection when data it
// sent stays unacknowledged for d. It covers what the heartbeat cannot see:
// a network that drops only what the source sends, while the broker's
// frames still arrive (the source's heartbeats then go unanswered by TCP,
// not by AMQP). A broker that merely stops reading (flow control) still
// acknowledges into its receive buffer, so it is not affected.
func giveUpUnacknowledged(d time.Duration) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var setErr error
		err := c.Control(func(fd uintptr) {
			setErr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, int(d.Milliseconds()))
		})
		if err != nil {
			return err
		}
		return setErr
	}
}
