package syncsource

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/testenv"
)

func TestSettingsRefuseBadValues(t *testing.T) {
	s, err := New("amqp://localhost/", "settings-test")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"\xff", strings.Repeat("v", maxClientVersion+1), "1.0\n"} {
		if err := s.SetClientVersion(v); Status(err) != StatusInvalid {
			t.Errorf("client version %q: %v", v, err)
		}
	}
	for _, d := range []float64{0, -1, 1e300} {
		if err := s.SetReconnectTimeout(d); Status(err) != StatusInvalid {
			t.Errorf("reconnect timeout %g: %v", d, err)
		}
	}
	for _, d := range []float64{0, 0.5, 1.5, 65536, -3} {
		if err := s.SetHeartbeat(d); Status(err) != StatusInvalid {
			t.Errorf("heartbeat %g: %v", d, err)
		}
	}
	if err := s.SetHeartbeat(7); err != nil {
		t.Errorf("heartbeat 7: %v", err)
	}
	if err := s.SetClientVersion("1.2.3"); err != nil {
		t.Error(err)
	}
	if err := s.SetReconnectTimeout(0.5); err != nil {
		t.Error(err)
	}
}

func TestWaitBeforeConnecting(t *testing.T) {
	s, err := New("amqp://localhost/", "settings-test")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(20 * time.Millisecond); Status(err) != StatusTimeout {
		t.Errorf("wait on a created source: %v", err)
	}
	if err := s.Stop(time.Second, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(time.Second); err != nil {
		t.Errorf("wait on a source stopped before connecting: %v", err)
	}
	if err := s.SetClientVersion("1"); Status(err) != StatusStopped {
		t.Errorf("client version after stop: %v", err)
	}
}

// TestSettingsReachTheCore: the client version is in the discover reply;
// settings are refused once connected; Wait sees a stop by Stop as nil.
func TestSettingsReachTheCore(t *testing.T) {
	e := start(t, nil)
	token := testenv.Token(t, "source")
	s, err := New(e.url, token)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetClientVersion("4.5.6-settings"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetReconnectTimeout(30); err != nil {
		t.Fatal(err)
	}
	if err := s.Connect(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	defer s.Close(false, false)
	if err := s.SetClientVersion("7"); Status(err) != StatusInvalid || !strings.Contains(err.Error(), "before connecting") {
		t.Errorf("client version after connect: %v", err)
	}
	if err := s.SetReconnectTimeout(1); Status(err) != StatusInvalid {
		t.Errorf("reconnect timeout after connect: %v", err)
	}
	if err := s.SetHeartbeat(5); Status(err) != StatusInvalid {
		t.Errorf("heartbeat after connect: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	replies, err := e.m.Broadcast(ctx, "discover", nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range replies {
		if r.AppID == token {
			found = true
			if r.Body["version"] != "4.5.6-settings" {
				t.Errorf("discover reply %v", r.Body)
			}
		}
	}
	if !found {
		t.Errorf("no discover reply from %s among %d", token, len(replies))
	}
	if err := s.Wait(20 * time.Millisecond); Status(err) != StatusTimeout {
		t.Errorf("wait on a running source: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait(20 * time.Second) }()
	if err := s.Stop(10*time.Second, false); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("wait across Stop: %v", err)
	}
}
