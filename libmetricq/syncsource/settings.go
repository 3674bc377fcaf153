package syncsource

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/libmetricq/libmetricq/libmetricq"
)

// maxClientVersion bounds the version text: it travels in every discover
// reply.
const maxClientVersion = 256

// SetClientVersion sets the version the source reports in its discover
// replies ("version"; the reference's client_version). Before Connect
// only.
func (s *Source) SetClientVersion(version string) error {
	switch {
	case !utf8.ValidString(version):
		return invalid("client version is not valid UTF-8")
	case len(version) > maxClientVersion:
		return invalid("client version of %d bytes is longer than %d", len(version), maxClientVersion)
	case strings.ContainsAny(version, "\x00\r\n"):
		return invalid("client version %q contains a control character", version)
	}
	return s.core.Configure(libmetricq.WithClientVersion(version))
}

// SetReconnectTimeout sets how long a lost connection may stay down before
// the source stops itself with a connection error (the reference's
// connection_timeout). Before Connect only.
func (s *Source) SetReconnectTimeout(seconds float64) error {
	if !(seconds > 0) || math.IsInf(seconds, 1) || seconds >= maxSeconds {
		return invalid("reconnect timeout must be a finite number of seconds > 0, got %g", seconds)
	}
	d := max(time.Duration(seconds*1e9), time.Nanosecond)
	return s.core.Configure(libmetricq.WithReconnectTimeout(d))
}

// SetHeartbeat sets the AMQP heartbeat of both connections (see
// libmetricq.WithHeartbeat): whole seconds, 1 to 65535. Before Connect
// only.
func (s *Source) SetHeartbeat(seconds float64) error {
	if !(seconds >= 1 && seconds <= 65535) {
		return invalid("heartbeat must be whole seconds from 1 to 65535, got %g", seconds)
	}
	return s.core.Configure(libmetricq.WithHeartbeat(time.Duration(seconds * 1e9)))
}

// Wait blocks until the source has stopped, or timeout passes. It returns
// nil when the source was stopped by Stop or Close, the reason when it
// stopped itself (e.g. an error wrapping ErrConnect once the reconnect
// timeout passed), and a context.DeadlineExceeded error when it is still
// running (or was never connected and not stopped) at the timeout.
func (s *Source) Wait(timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-s.core.Done():
		if err := s.core.Err(); err != nil {
			return fmt.Errorf("the source stopped on its own: %w", err)
		}
		return nil
	case <-timer.C:
		return fmt.Errorf("wait: the source did not stop within %v: %w", timeout, context.DeadlineExceeded)
	}
}
