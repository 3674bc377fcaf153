package amqpkit

import (
	"net"
	"strings"
	"testing"
	"time"
)

// stalledPair is a TCP connection whose peer never reads.
func stalledPair(t *testing.T, writeTimeout time.Duration) *deadlineConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	t.Cleanup(func() { peer.Close(); c.Close() })
	return &deadlineConn{Conn: c, writeTimeout: writeTimeout}
}

// writeUntilError writes until a write fails, and returns how long the
// failing write took.
func writeUntilError(c *deadlineConn) (time.Duration, error) {
	buf := make([]byte, 1<<20)
	for {
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			return time.Since(start), err
		}
	}
}

func TestDeadlineConnWriteStalls(t *testing.T) {
	c := stalledPair(t, 300*time.Millisecond)
	took, err := writeUntilError(c)
	if err == nil || !strings.Contains(err.Error(), "write stalled") {
		t.Fatalf("want a stalled write, got %v", err)
	}
	if took > 2*time.Second {
		t.Fatalf("the stalled write took %v with a 300ms write timeout", took)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("the connection stays usable after a torn write")
	}
}

// A close handshake's deadline reaches a write already blocked.
func TestDeadlineConnOwnerDeadlineCutsBlockedWrite(t *testing.T) {
	c := stalledPair(t, time.Hour)
	done := make(chan time.Duration, 1)
	go func() {
		took, _ := writeUntilError(c)
		done <- took
	}()
	// Once writes block, an owner's deadline must end the blocked one.
	time.Sleep(200 * time.Millisecond) // lets the buffers fill: not a synchronisation, the test holds either way
	if err := c.SetDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a blocked write outlived the owner's deadline")
	}
}

// A failed read (here: the heartbeat's read deadline) ends a write blocked
// behind the same silent peer at once.
func TestDeadlineConnFailedReadEndsBlockedWrite(t *testing.T) {
	c := stalledPair(t, time.Hour)
	done := make(chan struct{})
	go func() {
		_, _ = writeUntilError(c)
		close(done)
	}()
	if err := c.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read from a silent peer succeeded")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a blocked write outlived the failed read")
	}
}
