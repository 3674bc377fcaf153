package amqpkit

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"
)

// Every socket asks the kernel to give up data unacknowledged for as long
// as a write may take.
func TestSocketGivesUpUnacknowledgedData(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const writeTimeout = 7 * time.Second
	conn, err := openSocket(context.Background(), time.Now().Add(5*time.Second), writeTimeout)("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, err := conn.(*deadlineConn).Conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var getErr error
	if err := raw.Control(func(fd uintptr) {
		got, getErr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout)
	}); err != nil {
		t.Fatal(err)
	}
	if getErr != nil || got != int(writeTimeout.Milliseconds()) {
		t.Fatalf("TCP_USER_TIMEOUT = %d ms (%v), want %d", got, getErr, writeTimeout.Milliseconds())
	}
}
