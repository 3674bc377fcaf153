package amqpkit

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// deadlineConn is the socket under every AMQP connection. amqp091-go
// watches reads (the heartbeat sets read deadlines) but writes without a
// deadline, and holds its connection's write lock and the channel's lock
// while it writes: a peer that stops reading (a dead network with a full
// send buffer, a frozen broker) would block the publisher, the heartbeat
// and the close handshake for good. Here every write gets a deadline; a
// write that misses it, or any failed read, closes the socket, so the
// connection ends, every blocked write fails at once, and the reconnect and
// the in-order republish take over.
type deadlineConn struct {
	net.Conn
	writeTimeout time.Duration

	mu       sync.Mutex
	deadline time.Time // the owner's write deadline (handshake, close), zero for none
}

// writeTimeoutFor is how long one write may take: two heartbeat intervals,
// the time the broker allows between a client's frames. A broker under
// load or in flow control stops reading for far shorter; longer means
// nothing gets through.
func writeTimeoutFor(heartbeat time.Duration) time.Duration {
	if heartbeat <= 0 {
		heartbeat = 60 * time.Second // the broker chooses; RabbitMQ's default
	}
	return 2 * heartbeat
}

func (c *deadlineConn) Write(b []byte) (int, error) {
	limit := time.Now().Add(c.writeTimeout)
	c.mu.Lock()
	if !c.deadline.IsZero() && c.deadline.Before(limit) {
		limit = c.deadline
	}
	c.mu.Unlock()
	if err := c.Conn.SetWriteDeadline(limit); err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(b)
	if err != nil {
		// A frame written in part leaves the stream unusable anyway.
		c.Conn.Close()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return n, fmt.Errorf("write stalled (the peer took no data for %v): %w", c.writeTimeout, err)
		}
	}
	return n, err
}

func (c *deadlineConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		// The connection is over (amqp091 ends it on any read error); a
		// write blocked behind the same dead peer need not wait for its
		// deadline.
		c.Conn.Close()
	}
	return n, err
}

// SetDeadline and SetWriteDeadline are the owner's (amqp091 bounds the
// handshake and the close with them). They apply at once, to a write in
// progress too, so that a close is never held up by a stalled write.
func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.setOwnWriteDeadline(t)
	return c.Conn.SetDeadline(t)
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.setOwnWriteDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *deadlineConn) setOwnWriteDeadline(t time.Time) {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
}
