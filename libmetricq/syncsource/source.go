// Package syncsource is the blocking, thread-friendly face of a
// libmetricq Source that the C library (libmetricq/capi) exports, in the
// spirit of the Python SynchronousSource: every call returns within its
// timeout, errors are values mapped to the C status codes (Status), and
// handles are plain integers (Handles). Nothing here uses cgo, so it is
// tested like any Go package.
//
// One goroutine per source runs the core Source: it connects it, then
// waits for it to stop. Calls that touch the network (connect, declare,
// flush, stop) are handed to a goroutine and awaited through a channel
// with a timer, so the caller gets control back on time even when the
// operation does not; the operation's own context ends a little earlier,
// so that its more precise error usually arrives first. Send and SendBatch
// run in the caller's thread: they append under the metric's lock and never
// wait for the network; only a send that finds the bounded buffer full
// waits, for space, until its timeout.
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

type state int

const (
	stateCreated    state = iota // no core, or the last connect attempt failed
	stateConnecting              // a connect attempt runs
	stateConnected
	stateStopped // Stop was called (or the core stopped itself); final
)

// attempt is one run of Connect, owned by the lifecycle goroutine.
type attempt struct {
	done   chan struct{} // closed (under Source.mu) once err and the state are set
	err    error
	cancel context.CancelFunc
	// abandoned (under Source.mu): nobody waits for this attempt any more
	// (its caller timed out, or the source was stopped or freed). If it
	// connects anyway, the lifecycle goroutine stops it again.
	abandoned bool
}

// Source is a blocking MetricQ Source. Its methods are safe for concurrent
// use. Create it with New, then Connect.
type Source struct {
	url, token string
	handle     uintptr
	redactor   *amqpkit.Redactor // removes the URL's password
	log        *slog.Logger

	mu           sync.Mutex
	state        state
	maxBuffered  int
	chunkSize    int
	metricChunks map[string]int       // chunk sizes set before a core existed
	period       libmetricq.Timedelta // set before a core existed
	settings     settings             // set before a core existed
	attempt      *attempt
	core         *libmetricq.IntervalSource

	// fast is the core for Send: set while connecting or connected, and
	// kept after a stop, so the core answers ErrStopped itself.
	fast atomic.Pointer[libmetricq.IntervalSource]

	// stopCtx ends when Stop begins or the core stops: it wakes sends
	// waiting for buffer space.
	stopCtx    context.Context
	stopCancel context.CancelFunc

	configHook atomic.Pointer[ConfigHook]
	beforeStop atomic.Pointer[func(core uint64)]
	cores      atomic.Uint64 // cores created: a connect attempt creates one

	updateFn atomic.Pointer[UpdateHook]
	// inUpdate lets RunInterval return only after the update function has:
	// the caller may free what the function uses once RunInterval returns,
	// and an update that stops its own source is still running when the
	// source is done.
	inUpdate     sync.WaitGroup
	attached     chan struct{} // closed by RunInterval
	running      atomic.Bool   // RunInterval was called
	updates      int           // update calls so far; task goroutine only
	taskCtx      atomic.Pointer[context.Context]
	suppressSkip atomic.Bool
}

// New checks url and token and returns an unconnected source. It does no
// I/O.
func New(rawURL, token string) (*Source, error) {
	if !utf8.ValidString(rawURL) {
		return nil, invalid("broker URL is not valid UTF-8")
	}
	// The core checks both (and redacts the URL in its errors).
	if _, err := libmetricq.NewSource(rawURL, token); err != nil {
		return nil, err
	}
	s := &Source{
		url:         rawURL,
		token:       token,
		redactor:    amqpkit.NewRedactor(rawURL),
		maxBuffered: libmetricq.DefaultMaxBufferedPoints,
		chunkSize:   1,
		attached:    make(chan struct{}),
	}
	s.log = newLogger(s)
	s.stopCtx, s.stopCancel = context.WithCancel(context.Background())
	return s, nil
}

// Handle returns the handle Handles.Register gave the source (0 if none).
func (s *Source) Handle() uintptr { return s.handle }

// Token returns the source's token.
func (s *Source) Token() string { return s.token }

// ErrorText is err's text without the URL's password.
func (s *Source) ErrorText(err error) string { return s.redact(err.Error()) }

func (s *Source) redact(text string) string { return s.redactor.Text(text) }

// RedactPassword removes the password of rawURL from text. New's errors
// are already redacted; this is for texts made before a Source exists.
func RedactPassword(rawURL, text string) string { return amqpkit.RedactText(rawURL, text) }

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
// Before Connect only: the core takes the bound when it is created.
func (s *Source) SetMaxBuffered(points int64) error {
	if points < 1 || points > 1<<40 {
		return invalid("max buffered points must be between 1 and 2^40, got %d", points)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.state == stateStopped:
		return s.stoppedErr()
	case s.core != nil:
		return invalid("the buffer bound can only be set before connecting")
	case int64(s.chunkSize) > points:
		return invalid("the default chunk size %d exceeds a buffer of %d points", s.chunkSize, points)
	}
	for name, n := range s.metricChunks {
		if int64(n) > points {
			return invalid("chunk size %d of metric %s exceeds a buffer of %d points", n, quote(name), points)
		}
	}
	s.maxBuffered = int(points)
	return nil
}

// SetConfigHook installs (or, with nil, removes) the configuration hook.
func (s *Source) SetConfigHook(h ConfigHook) {
	if h == nil {
		s.configHook.Store(nil)
		return
	}
	s.configHook.Store(&h)
}

func (s *Source) stoppedErr() error {
	if core := s.core; core != nil {
		if cause := core.Err(); cause != nil {
			return fmt.Errorf("%w: %w", libmetricq.ErrStopped, cause)
		}
	}
	return libmetricq.ErrStopped
}

// newCore builds the core source with the settings made so far; s.mu held.
func (s *Source) newCore() (*libmetricq.IntervalSource, error) {
	number := s.cores.Add(1)
	opts := append([]libmetricq.Option{
		libmetricq.WithLogger(s.log),
		libmetricq.WithConfigHandler(s.onConfig),
		libmetricq.WithMaxBufferedPoints(s.maxBuffered),
		libmetricq.WithChunkSize(s.chunkSize),
		libmetricq.WithBeforeStop(func() {
			if fn := s.beforeStop.Load(); fn != nil {
				(*fn)(number)
			}
		}),
	}, s.settings.options()...)
	core, err := libmetricq.NewIntervalSource(s.url, s.token, s.update, opts...)
	if err != nil {
		return nil, err
	}
	for name, n := range s.metricChunks {
		if err := core.SetMetricChunkSize(name, n); err != nil {
			return nil, err
		}
	}
	if s.period > 0 {
		if err := core.SetPeriod(s.period); err != nil {
			return nil, err
		}
	}
	return core, nil
}

// Connect registers with the manager and opens the data connection,
// returning within timeout. A failed or timed-out attempt leaves the
// source unconnected (a timed-out one is abandoned: if it connects after
// all, it is stopped again), so Connect may be called again.
func (s *Source) Connect(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	s.mu.Lock()
	for s.state == stateConnecting {
		a := s.attempt
		s.mu.Unlock()
		if !waitUntil(a.done, deadline) {
			return fmt.Errorf("connect: an earlier connect attempt did not end within %v: %w", timeout, context.DeadlineExceeded)
		}
		s.mu.Lock()
	}
	s.refresh()
	switch s.state {
	case stateConnected:
		s.mu.Unlock()
		return invalid("already connected")
	case stateStopped:
		err := s.stoppedErr()
		s.mu.Unlock()
		return err
	}
	core, err := s.newCore()
	if err != nil {
		s.mu.Unlock()
		return err
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(-margin(timeout)))
	a := &attempt{done: make(chan struct{}), cancel: cancel}
	s.attempt, s.core, s.state = a, core, stateConnecting
	s.fast.Store(core)
	s.mu.Unlock()

	go s.lifecycle(core, a, ctx)

	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-a.done:
		return a.err
	case <-s.stopCtx.Done():
		// Stop or Close abandoned the attempt; the lifecycle goroutine
		// cleans up when it ends (the core's dial may not notice the
		// cancellation before its deadline).
		return fmt.Errorf("%w: connect abandoned: the source was stopped or freed while connecting", libmetricq.ErrStopped)
	case <-timer.C:
	}
	s.mu.Lock()
	select {
	case <-a.done:
		s.mu.Unlock()
		return a.err
	default:
	}
	a.abandoned = true
	s.mu.Unlock()
	cancel()
	return fmt.Errorf("connect: not ready within %v: %w", timeout, context.DeadlineExceeded)
}

func waitUntil(ch <-chan struct{}, deadline time.Time) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-ch:
		return true
	case <-timer.C:
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
}

// lifecycle is the goroutine that runs the core: it connects it and then
// waits for it to stop.
func (s *Source) lifecycle(core *libmetricq.IntervalSource, a *attempt, ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("internal error in the source's goroutine", "panic", fmt.Sprint(r))
		}
	}()
	err := core.Connect(ctx)
	a.cancel()
	s.mu.Lock()
	if a.abandoned {
		if err == nil {
			s.mu.Unlock()
			stopCtx, cancel := context.WithTimeout(context.Background(), CloseTimeout)
			if stopErr := core.Stop(stopCtx); stopErr != nil {
				s.log.Warn("stopping a source whose connect was abandoned", "error", stopErr)
			}
			cancel()
			s.mu.Lock()
		}
		err = fmt.Errorf("%w: connect abandoned: the source was stopped or freed, or the caller timed out, while connecting", libmetricq.ErrStopped)
	}
	if err != nil {
		if s.state == stateConnecting {
			s.state = stateCreated
		}
		if s.core == core {
			s.core = nil
			s.fast.Store(nil)
		}
	} else {
		s.state = stateConnected
	}
	a.err = err
	close(a.done)
	s.mu.Unlock()
	if err != nil {
		return
	}
	<-core.Done()
	s.mu.Lock()
	s.state = stateStopped
	s.mu.Unlock()
	s.stopCancel()
}

// refresh notices, under s.mu, that the core has stopped (on its own, or
// by Stop) before the lifecycle goroutine has recorded it.
func (s *Source) refresh() {
	if s.state == stateConnected {
		select {
		case <-s.core.Done():
			s.state = stateStopped
		default:
		}
	}
}

// active returns the core for calls that need a connection (or a connect
// in progress, for calls from the configuration hook).
func (s *Source) active() (*libmetricq.IntervalSource, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh()
	switch s.state {
	case stateStopped:
		return nil, s.stoppedErr()
	case stateCreated:
		return nil, invalid("not connected: call mq_source_connect first")
	}
	return s.core, nil
}

// Declare declares metrics with their metadata.
func (s *Source) Declare(metrics map[string]libmetricq.Metadata, timeout time.Duration) error {
	for name := range metrics {
		if err := libmetricq.ValidateMetricName(name); err != nil {
			return err
		}
	}
	core, err := s.active()
	if err != nil {
		return err
	}
	return handover(context.Background(), timeout, "declare", func(ctx context.Context) error {
		return core.DeclareMetrics(ctx, metrics)
	})
}

// SetChunkSize sets the default chunk size (metric == nil) or one metric's.
func (s *Source) SetChunkSize(metric *string, n int64) error {
	if metric != nil {
		if err := libmetricq.ValidateMetricName(*metric); err != nil {
			return err
		}
	}
	if n < 0 {
		return invalid("chunk size must be >= 1, or 0 for flushing by hand; got %d", n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh()
	if n > int64(s.maxBuffered) {
		return invalid("chunk size %d exceeds the buffer of %d points and could never fill", n, s.maxBuffered)
	}
	if s.state == stateStopped {
		return s.stoppedErr()
	}
	if s.core == nil {
		if metric == nil {
			s.chunkSize = int(n)
			return nil
		}
		if s.metricChunks == nil {
			s.metricChunks = map[string]int{}
		}
		s.metricChunks[*metric] = int(n)
		return nil
	}
	if metric == nil {
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

// notActive explains why there is no core for a send.
func (s *Source) notActive() error {
	_, err := s.active()
	if err == nil { // connected between the two looks
		err = fmt.Errorf("%w: source changed state during the call; retry", libmetricq.ErrStopped)
	}
	return err
}

// Send accepts one point. metric may point into memory that is only valid
// during the call: the core uses it for a lookup and for error texts, which
// callers must format before returning.
func (s *Source) Send(metric string, t int64, value float64, timeout time.Duration) error {
	core := s.fast.Load()
	if core == nil {
		return s.notActive()
	}
	return s.nowOrWait(timeout, func(ctx context.Context) error {
		return core.Send(ctx, metric, libmetricq.Timestamp(t), value)
	})
}

// SendBatch accepts points of one metric, all or none. The slices may
// point into memory only valid during the call (the core copies them).
func (s *Source) SendBatch(metric string, times []libmetricq.Timestamp, values []float64, timeout time.Duration) error {
	core := s.fast.Load()
	if core == nil {
		return s.notActive()
	}
	return s.nowOrWait(timeout, func(ctx context.Context) error {
		return core.SendBatch(ctx, metric, times, values)
	})
}

// SetBeforeStop sets what runs when a core begins to stop, before it stops
// taking points (see libmetricq.WithBeforeStop), with the core's number
// (see CoreNumber): a core whose connect was abandoned may stop after a
// later connect succeeded.
func (s *Source) SetBeforeStop(fn func(core uint64)) { s.beforeStop.Store(&fn) }

// CoreNumber numbers the latest core, counting from 1 (0: none yet). Every
// connect attempt makes a new core, so after a successful connect it is
// the connected one.
func (s *Source) CoreNumber() uint64 { return s.cores.Load() }

// MetricState is the core's state of a declared metric (see
// libmetricq.Source.MetricState).
func (s *Source) MetricState(metric string) (libmetricq.MetricState, error) {
	core := s.fast.Load()
	if core == nil {
		return libmetricq.MetricState{}, s.notActive()
	}
	return core.MetricState(metric)
}

// Reserve takes buffer space for n points, waiting up to timeout (see
// libmetricq.Source.Reserve).
func (s *Source) Reserve(metric string, n int, timeout time.Duration) error {
	core := s.fast.Load()
	if core == nil {
		return s.notActive()
	}
	return s.nowOrWait(timeout, func(ctx context.Context) error {
		return core.Reserve(ctx, metric, n)
	})
}

// TryReserve takes buffer space for up to n points without waiting and
// returns how many.
func (s *Source) TryReserve(n int) int {
	if core := s.fast.Load(); core != nil {
		return core.TryReserve(n)
	}
	return 0
}

// Unreserve gives back reserved space.
func (s *Source) Unreserve(n int) {
	if core := s.fast.Load(); core != nil {
		core.Unreserve(n)
	}
}

// SendBatchReserved accepts points whose space was reserved; it never
// waits.
func (s *Source) SendBatchReserved(metric string, times []libmetricq.Timestamp, values []float64) error {
	core := s.fast.Load()
	if core == nil {
		return s.notActive()
	}
	return core.SendBatchReserved(metric, times, values)
}

// MaxBuffered is the bound of points accepted but not yet confirmed.
func (s *Source) MaxBuffered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxBuffered
}

// nowOrWait runs op (a send or reservation) at once and, only if it found
// the buffer full, again waiting for space until timeout or until the
// source stops.
func (s *Source) nowOrWait(timeout time.Duration, op func(context.Context) error) error {
	err := op(noWait)
	if err == nil || !errors.Is(err, context.Canceled) {
		return err
	}
	ctx, cancel := context.WithTimeout(s.stopCtx, timeout)
	defer cancel()
	err = op(ctx)
	if err != nil && errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: stopped while the send waited for buffer space", libmetricq.ErrStopped)
	}
	return err
}

// Flush returns once every point accepted before the call is confirmed by
// the broker.
func (s *Source) Flush(timeout time.Duration) error {
	core, err := s.active()
	if err != nil {
		return err
	}
	return handover(context.Background(), timeout, "flush", core.Flush)
}

// Config returns the JSON text of the latest configuration ("{}" before
// connecting).
func (s *Source) Config() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh()
	switch {
	case s.state == stateStopped:
		return nil, s.stoppedErr()
	case s.core == nil:
		return []byte("{}"), nil
	}
	return s.core.Config(), nil
}

// Stats returns the core's counters (zero before connecting).
func (s *Source) Stats() libmetricq.Stats {
	core := s.fast.Load()
	if core == nil {
		return libmetricq.Stats{}
	}
	return core.Stats()
}

// Stop flushes (within timeout) and disconnects. It is idempotent: a
// later Stop returns the result of the first. fromTask says that the call
// comes from inside the update function, whose end the stop must then not
// wait for. A connect in progress is abandoned: it fails at once, and if
// the core connects after all, the lifecycle goroutine stops it again.
func (s *Source) Stop(timeout time.Duration, fromTask bool) error {
	s.mu.Lock()
	core := s.halt()
	s.mu.Unlock()
	s.stopCancel()
	if core == nil {
		return nil
	}
	base := context.Background()
	if fromTask {
		if tc := s.taskCtx.Load(); tc != nil {
			// The task's values (which tell the core not to wait for the
			// task), not its cancellation (which Stop itself triggers).
			base = context.WithoutCancel(*tc)
		}
	}
	return handover(base, timeout, "stop", core.Stop)
}

// halt makes the state final, under s.mu, and returns the core to stop:
// nil when there is none, or when a connect in progress owns it.
func (s *Source) halt() *libmetricq.IntervalSource {
	prev := s.state
	s.state = stateStopped
	switch prev {
	case stateConnecting:
		s.attempt.abandoned = true
		s.attempt.cancel()
		return nil
	case stateCreated:
		return nil
	}
	return s.core
}

// Close is what mq_source_free does: stop, bounded by CloseTimeout, and
// forget. From the configuration hook the stop runs in the background (it
// has to wait for the hook to return).
func (s *Source) Close(fromTask, fromConfigHook bool) {
	s.mu.Lock()
	connected := s.state == stateConnected || s.state == stateStopped && s.core != nil
	if !connected {
		s.halt()
	}
	s.mu.Unlock()
	if !connected {
		s.stopCancel()
		return
	}
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
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh()
	if s.state == stateStopped {
		return s.stoppedErr()
	}
	if s.core == nil {
		s.period = d
		return nil
	}
	return s.core.SetPeriod(d)
}

// RunInterval runs the core IntervalSource schedule with fn as the update
// function and blocks until the source stops. It returns nil when the
// source was stopped with Stop or Close, else why it stopped itself (a
// *HookError when fn returned non-zero).
//
// The core starts the schedule when the source connects; until RunInterval
// attaches fn, the first update just waits. The grid of deadlines is thus
// anchored at connect time, and the core warns once about the deadlines
// "missed" until fn was attached: that warning is dropped (see logHandler).
func (s *Source) RunInterval(seconds float64, fn UpdateHook) error {
	if fn == nil {
		return invalid("update function is NULL")
	}
	d, err := Period(seconds)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.refresh()
	switch s.state {
	case stateStopped:
		err := s.stoppedErr()
		s.mu.Unlock()
		return err
	case stateCreated, stateConnecting:
		s.mu.Unlock()
		return invalid("not connected: call mq_source_run_interval after connecting")
	}
	core := s.core
	s.mu.Unlock()
	if !s.running.CompareAndSwap(false, true) {
		return invalid("mq_source_run_interval already runs on this source")
	}
	if err := core.SetPeriod(d); err != nil {
		return err
	}
	s.updateFn.Store(&fn)
	close(s.attached)
	<-core.Done()
	s.inUpdate.Wait()
	return core.Err()
}

// update is the core IntervalSource's update function.
func (s *Source) update(ctx context.Context, _ *libmetricq.IntervalSource) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = PanicError(r)
		}
	}()
	if s.updates == 0 {
		select {
		case <-s.attached:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.inUpdate.Add(1)
	defer s.inUpdate.Done()
	s.updates++
	// The round after the first may find deadlines "missed" while nothing
	// was attached; see RunInterval.
	s.suppressSkip.Store(s.updates == 1)
	s.taskCtx.Store(&ctx)
	if code := (*s.updateFn.Load())(); code != 0 {
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
	return nil
}
