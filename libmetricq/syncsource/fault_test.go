package syncsource

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// mq_source_stop's path: Stop(timeout) while the network to the broker is
// a black hole (both directions silent, sockets open; the default
// heartbeat, so it is not noticed yet) returns within its timeout, counts
// what the broker did not confirm in points_dropped and names it.
func TestStopBoundedInBlackhole(t *testing.T) {
	e := start(t, nil)
	proxy, proxied := testenv.NewFaultProxy(t, e.url)
	s, err := New(proxied, testenv.Token(t, "source"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Connect(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	const metric = "sync.stop.blackhole"
	if err := s.Declare(map[string]libmetricq.Metadata{metric: nil}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	send := func(from, n int) {
		for i := range n {
			if err := s.Send(metric, int64(1_700_000_000_000_000_000+from+i), 1, time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(0, 100)
	// Received is not confirmed: the broker's confirms may still be on
	// the wire when the stall begins, and then they never arrive.
	if err := s.Flush(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	e.receive(t, metric, 100)
	if proxy.Stall("", testenv.Up, testenv.Down) != 2 {
		t.Fatal(proxy)
	}
	send(100, 500)

	const timeout = time.Second
	start := time.Now()
	err = s.Stop(timeout, false)
	took := time.Since(start)
	if took > timeout+testenv.LateMargin {
		t.Fatalf("Stop took %v with a %v timeout", took, timeout)
	}
	st := s.Stats()
	// Closing the stalled connections goes on in the background; a stopped
	// source reports neither as up.
	if st.PointsDropped != 500 || st.PointsConfirmed != 100 || st.DataConnected || st.ManagementConnected {
		t.Fatalf("stats after the stop: %+v", st)
	}
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d points not delivered", st.PointsDropped)) {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("measured: Stop(%v) returned after %v: %v", timeout, took.Round(time.Millisecond), err)
}
