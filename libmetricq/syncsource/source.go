// Package syncsource is the blocking, thread-friendly face of a
// libmetricq Source that the C library (libmetricq/capi) exports, in the
// spirit of the Python SynchronousSource: every call returns within its
// timeout, errors are values mapped to the C status codes (Status), and
// handles are plain integers (Handles). Nothing here uses cgo, so it is
// tested like any Go package.
//
// A Source wraps one core IntervalSource from New to Close: the core owns
// the settings, the connect attempts (a failed one may be retried) and the
// whole lifecycle; this layer adds timeouts, C-style hooks and status
// codes. Calls that touch the network (connect, declare, flush, stop) are
// handed to a goroutine and awaited through a channel with a timer, so
// the caller gets control back on time even when the operation does not;
// the operation's own context ends a little earlier, so that its more
// precise error usually arrives first. Send and SendBatch run in the
// caller's thread: they append under the metric's lock and never wait for
// the network; only a send that finds the bounded buffer full waits, for
// space, until its timeout.
package syncsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// CloseTimeout bounds the stop that Close (mq_source_free) does.
const CloseTimeout = 10 * time.Second

// ConfigHook receives the JSON text of a configuration from the manager.
// A non-zero result refuses it.
type ConfigHook func(configJSON []byte) int

// UpdateHook is one IntervalSource round. A non-zero result stops the
// source, except StatusPublish, which is logged and ridden out.
type UpdateHook func() int

// Source is a blocking MetricQ Source. Its methods are safe for concurrent
// use. Create it with New, then Connect.
type Source struct {
	url, token string
	handle     uintptr
	redactor   *amqpkit.Redactor // removes the URL's password
	log        *slog.Logger
	core       *libmetricq.IntervalSource

	configHook atomic.Pointer[ConfigHook]
	beforeStop atomic.Pointer[func()]

	// inUpdate lets RunInterval return only after the update function has:
	// the caller may free what the function uses once RunInterval returns,
	// and an update that stops its own source is still running when the
	// source is done.
	inUpdate sync.WaitGroup
	running  atomic.Bool // RunInterval was called
	taskCtx  atomic.Pointer[context.Context]
	// freed is set by Close: a connect whose configuration hook freed the
	// source fails, even before the stop, which runs in the background,
	// has begun.
	freed atomic.Bool
}

// New checks url and token and returns an unconnected source. It does no
// I/O but reading an amqps:// URL's certificate files.
func New(rawURL, token string) (*Source, error) {
	if !utf8.ValidString(rawURL) {
		return nil, invalid("broker URL is not valid UTF-8")
	}
	s := &Source{url: rawURL, token: token, redactor: amqpkit.NewRedactor(rawURL)}
	s.log = newLogger(s)
	// The core checks url and token (and redacts the URL in its errors).
	// Its update function comes with RunInterval.
	core, err := libmetricq.NewIntervalSource(rawURL, token, nil,
		libmetricq.WithLogger(s.log),
		libmetricq.WithConfigHandler(s.onConfig),
		libmetricq.WithBeforeStop(func() {
			if fn := s.beforeStop.Load(); fn != nil {
				(*fn)()
			}
		}),
	)
	if err != nil {
		return nil, err
	}
	s.core = core
	return s, nil
}

// Handle returns the handle Handles.Register gave the source (0 if none).
func (s *Source) Handle() uintptr { return s.handle }

// Token returns the source's token.
func (s *Source) Token() string { return s.token }

// ErrorText is err's text without the URL's password.
func (s *Source) ErrorText(err error) string { return s.redact(err.Error()) }

func (s *Source) redact(text string) string { return s.redactor.Text(text) }

// margin is how much earlier than the caller's deadline a handed-over
// operation's context ends, so that its own error (which says why) wins
// the race against the caller's timer.
func margin(timeout time.Duration) time.Duration {
	return min(timeout/5, 250*time.Millisecond)
}

// handover runs op on a goroutine of its own and waits for it at most
// timeout. op's context derives from base and ends margin earlier. When the
// caller's timer fires first, op keeps running until its context ends and
// its result is dropped, as in SynchronousSource.
func handover(base context.Context, timeout time.Duration, what string, op func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(base, deadline.Add(-margin(timeout)))
	done := make(chan error, 1)
	go func() {
		defer cancel()
		defer func() {
			if r := recover(); r != nil {
				done <- PanicError(r)
			}
		}()
		done <- op(ctx)
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		select {
		case err := <-done:
			return err
		default:
		}
		return fmt.Errorf("%s: not done within %v: %w", what, timeout, context.DeadlineExceeded)
	}
}

// PanicError turns a recovered panic into an ErrInternal error.
func PanicError(r any) error {
	return fmt.Errorf("%w: panic: %v", ErrInternal, r)
}

// SetMaxBuffered bounds the points held until the broker confirms them.
// Before Connect only.
func (s *Source) SetMaxBuffered(points int64) error {
	if points < 1 || points > 1<<40 {
		return invalid("max buffered points must be between 1 and 2^40, got %d", points)
	}
	return s.core.Configure(libmetricq.WithMaxBufferedPoints(int(points)))
}

// SetConfigHook installs (or, with nil, removes) the configuration hook.
func (s *Source) SetConfigHook(h ConfigHook) {
	if h == nil {
		s.configHook.Store(nil)
		return
	}
	s.configHook.Store(&h)
}

// stoppedErr is the error of calls on a stopped source: ErrStopped, with
// the reason when the core stopped itself.
func (s *Source) stoppedErr() error {
	if cause := s.core.Err(); cause != nil {
		return fmt.Errorf("%w: %w", libmetricq.ErrStopped, cause)
	}
	return libmetricq.ErrStopped
}

// Connect registers with the manager and opens the data connection,
// returning within timeout. A failed or timed-out attempt leaves the
// source unconnected (the core undoes it), so Connect may be called again.
func (s *Source) Connect(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(-margin(timeout)))
	done := make(chan error, 1)
	go func() {
		defer cancel()
		defer func() {
			if r := recover(); r != nil {
				done <- PanicError(r)
			}
		}()
		done <- s.core.Connect(ctx)
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
	}
	// Once cancelled, the attempt can no longer succeed: the core either
	// connected before, or will undo it in the background.
	cancel()
	select {
	case err := <-done:
		return err
	default:
	}
	if s.core.Connected() {
		return nil
	}
	return fmt.Errorf("connect: not ready within %v: %w", timeout, context.DeadlineExceeded)
}

// Declare declares metrics with their metadata.
func (s *Source) Declare(metrics map[string]libmetricq.Metadata, timeout time.Duration) error {
	for name := range metrics {
		if err := libmetricq.ValidateMetricName(name); err != nil {
			return err
		}
	}
	return handover(context.Background(), timeout, "declare", func(ctx context.Context) error {
		return s.core.DeclareMetrics(ctx, metrics)
	})
}

// SetChunkSize sets the default chunk size (metric == nil) or one metric's.
func (s *Source) SetChunkSize(metric *string, n int64) error {
	if metric != nil {
		if err := libmetricq.ValidateMetricName(*metric); err != nil {
			return err
		}
	}
	switch {
	case n < 0:
		return invalid("chunk size must be >= 1, or 0 for flushing by hand; got %d", n)
	case n > 1<<40:
		return invalid("chunk size %d exceeds the buffer of %d points and could never fill", n, s.core.MaxBufferedPoints())
	case s.core.Stopped():
		return s.stoppedErr()
	case metric == nil:
		return s.core.SetChunkSize(int(n))
	}
	return s.core.SetMetricChunkSize(*metric, int(n))
}

// noWait is a context that has already ended: a send tried with it either
// succeeds at once or, if it would have to wait for buffer space, fails
// with context.Canceled without waiting. That keeps a timer and a context
// allocation off the per-point path.
var noWait = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// Send accepts one point. metric may point into memory that is only valid
// during the call: the core uses it for a lookup and for error texts, which
// callers must format before returning.
func (s *Source) Send(metric string, t int64, value float64, timeout time.Duration) error {
	return s.nowOrWait(timeout, func(ctx context.Context) error {
		return s.core.Send(ctx, metric, libmetricq.Timestamp(t), value)
	})
}

// SendBatch accepts points of one metric, all or none. The slices may
// point into memory only valid during the call (the core copies them).
func (s *Source) SendBatch(metric string, times []libmetricq.Timestamp, values []float64, timeout time.Duration) error {
	return s.nowOrWait(timeout, func(ctx context.Context) error {
		return s.core.SendBatch(ctx, metric, times, values)
	})
}

// SetBeforeStop sets what runs once when the source begins to stop, before
// it stops taking points (see libmetricq.WithBeforeStop).
func (s *Source) SetBeforeStop(fn func()) { s.beforeStop.Store(&fn) }

// HandOver takes points staged in front of the source and returns how many
// and the metric's next lease (see libmetricq.Source.HandOver).
func (s *Source) HandOver(metric string, times []libmetricq.Timestamp, values []float64, want int) (int, libmetricq.Lease, error) {
	return s.core.HandOver(metric, times, values, want)
}

// SendLeased accepts points that were not staged, on the metric's lease
// (see libmetricq.Source.SendLeased); it never waits.
func (s *Source) SendLeased(metric string, times []libmetricq.Timestamp, values []float64) error {
	return s.core.SendLeased(metric, times, values)
}

// AwaitRoom reserves space for n points of the metric's lease, waiting up
// to timeout (see libmetricq.Source.AwaitRoom).
func (s *Source) AwaitRoom(metric string, n int, timeout time.Duration) error {
	return s.nowOrWait(timeout, func(ctx context.Context) error {
		return s.core.AwaitRoom(ctx, metric, n)
	})
}

// nowOrWait runs op (a send or reservation) at once and, only if it found
// the buffer full, again waiting for space until timeout (a stop ends the
// wait: the core then answers ErrStopped).
func (s *Source) nowOrWait(timeout time.Duration, op func(context.Context) error) error {
	err := op(noWait)
	if err == nil || !errors.Is(err, context.Canceled) {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return op(ctx)
}

// Flush returns once every point accepted before the call is confirmed by
// the broker.
func (s *Source) Flush(timeout time.Duration) error {
	return handover(context.Background(), timeout, "flush", s.core.Flush)
}

// Config returns the JSON text of the latest configuration ("{}" before
// connecting).
func (s *Source) Config() ([]byte, error) {
	if s.core.Stopped() {
		return nil, s.stoppedErr()
	}
	return s.core.Config(), nil
}

// Stats returns the core's counters.
func (s *Source) Stats() libmetricq.Stats { return s.core.Stats() }

// Stop flushes (within timeout) and disconnects. It is idempotent: a
// later Stop returns the result of the first. fromTask says that the call
// comes from inside the update function, whose end the stop must then not
// wait for. A connect in progress is cancelled and undone.
func (s *Source) Stop(timeout time.Duration, fromTask bool) error {
	base := context.Background()
	if fromTask {
		if tc := s.taskCtx.Load(); tc != nil {
			// The task's values (which tell the core not to wait for the
			// task), not its cancellation (which Stop itself triggers).
			base = context.WithoutCancel(*tc)
		}
	}
	return handover(base, timeout, "stop", s.core.Stop)
}

// Close is what mq_source_free does: stop, bounded by CloseTimeout, and
// forget. From the configuration hook the stop runs in the background (it
// has to wait for the hook to return).
func (s *Source) Close(fromTask, fromConfigHook bool) {
	s.freed.Store(true)
	stop := func() {
		if err := s.Stop(CloseTimeout, fromTask); err != nil {
			s.log.Warn("free: the stop failed", "error", err)
		}
	}
	if fromConfigHook {
		go func() {
			defer func() { _ = recover() }()
			stop()
		}()
		return
	}
	stop()
}

// SetPeriod sets the IntervalSource period (see RunInterval).
func (s *Source) SetPeriod(seconds float64) error {
	d, err := Period(seconds)
	if err != nil {
		return err
	}
	if s.core.Stopped() {
		return s.stoppedErr()
	}
	return s.core.SetPeriod(d)
}

// RunInterval runs the core IntervalSource schedule with fn as the update
// function and blocks until the source stops. It returns nil when the
// source was stopped with Stop or Close, else why it stopped itself (a
// *HookError when fn returned non-zero). The schedule's grid of deadlines
// is anchored when fn is attached, here.
func (s *Source) RunInterval(seconds float64, fn UpdateHook) error {
	if fn == nil {
		return invalid("update function is NULL")
	}
	d, err := Period(seconds)
	if err != nil {
		return err
	}
	switch {
	case s.core.Stopped():
		return s.stoppedErr()
	case !s.core.Connected():
		return invalid("not connected: call mq_source_run_interval after connecting")
	case !s.running.CompareAndSwap(false, true):
		return invalid("mq_source_run_interval already runs on this source")
	}
	if err := s.core.SetPeriod(d); err != nil {
		return err
	}
	if err := s.core.Attach(func(ctx context.Context, _ *libmetricq.IntervalSource) error { return s.update(ctx, fn) }); err != nil {
		return err
	}
	<-s.core.Done()
	s.inUpdate.Wait()
	return s.core.Err()
}

// update is one round of the schedule: the C update function.
func (s *Source) update(ctx context.Context, fn UpdateHook) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = PanicError(r)
		}
	}()
	s.inUpdate.Add(1)
	defer s.inUpdate.Done()
	s.taskCtx.Store(&ctx)
	if code := fn(); code != 0 {
		return &HookError{Hook: hookUpdate, Code: code}
	}
	return nil
}

// onConfig is the core's configuration handler: it calls the hook, if any.
func (s *Source) onConfig(_ context.Context, _ *libmetricq.Source, config map[string]any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = PanicError(r)
		}
	}()
	hook := s.configHook.Load()
	if hook == nil {
		return nil
	}
	text, err := json.Marshal(config)
	if err != nil {
		return fmt.Errorf("%w: configuration not encodable: %v", ErrInternal, err)
	}
	if code := (*hook)(text); code != 0 {
		return &HookError{Hook: hookConfig, Code: code}
	}
	if s.freed.Load() {
		return fmt.Errorf("%w: the source was freed by its configuration hook", libmetricq.ErrStopped)
	}
	return nil
}
