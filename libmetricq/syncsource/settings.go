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

// settings are the core's options a host sets before connecting, beside
// the buffer bound and chunk sizes: they become libmetricq options when a
// core is built.
type settings struct {
	clientVersion    string
	reconnectTimeout time.Duration // 0: the core's default
}

func (st settings) options() []libmetricq.Option {
	var opts []libmetricq.Option
	if st.clientVersion != "" {
		opts = append(opts, libmetricq.WithClientVersion(st.clientVersion))
	}
	if st.reconnectTimeout > 0 {
		opts = append(opts, libmetricq.WithReconnectTimeout(st.reconnectTimeout))
	}
	return opts
}

// maxClientVersion bounds the version text: it travels in every discover
// reply.
const maxClientVersion = 256

// beforeConnect runs change under s.mu if the source has no core yet (it
// was never connected, or its connects failed); what is set then goes into
// the core the next connect builds.
func (s *Source) beforeConnect(what string, change func()) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh()
	switch {
	case s.state == stateStopped:
		return s.stoppedErr()
	case s.core != nil:
		return invalid("the %s can only be set before connecting", what)
	}
	change()
	return nil
}

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
	return s.beforeConnect("client version", func() { s.settings.clientVersion = version })
}

// SetReconnectTimeout sets how long a lost connection may stay down before
// the source stops itself with a connection error (the reference's
// connection_timeout). Before Connect only.
func (s *Source) SetReconnectTimeout(seconds float64) error {
	if !(seconds > 0) || math.IsInf(seconds, 1) || seconds >= maxSeconds {
		return invalid("reconnect timeout must be a finite number of seconds > 0, got %g", seconds)
	}
	d := max(time.Duration(seconds*1e9), time.Nanosecond)
	return s.beforeConnect("reconnect timeout", func() { s.settings.reconnectTimeout = d })
}

// Wait blocks until the source has stopped, or timeout passes. It returns
// nil when the source was stopped by Stop or Close, the reason when it
// stopped itself (e.g. an error wrapping ErrConnect once the reconnect
// timeout passed), and a context.DeadlineExceeded error when it is still
// running (or was never connected and not stopped) at the timeout.
func (s *Source) Wait(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	timedOut := func() error {
		return fmt.Errorf("wait: the source did not stop within %v: %w", timeout, context.DeadlineExceeded)
	}
	if !waitUntil(s.stopCtx.Done(), deadline) {
		return timedOut()
	}
	s.mu.Lock()
	a := s.attempt
	s.mu.Unlock()
	if a == nil {
		return nil // stopped before any connect
	}
	if !waitUntil(a.done, deadline) {
		return timedOut()
	}
	if a.err != nil {
		return nil // stopped while connecting: the core never ran
	}
	s.mu.Lock()
	core := s.core
	s.mu.Unlock()
	if !waitUntil(core.Done(), deadline) {
		return timedOut()
	}
	if err := core.Err(); err != nil {
		return fmt.Errorf("the source stopped on its own: %w", err)
	}
	return nil
}
