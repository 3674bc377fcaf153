package libmetricq

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
)

// Source is a MetricQ Source. Create it with NewSource, then Connect (or
// Run). Its methods are safe for concurrent use.
type Source struct {
	url   string
	token string
	given options // as given, to which Configure adds
	opts  options // as given, checked and completed
	log   *slog.Logger

	mgmt     linkSlot
	handlers map[string]amqpkit.Handler

	pubPtr      atomic.Pointer[publisher]
	dataAddress string // the manager's dataServerAddress at Connect
	budget      *pointBudget
	stats       counters
	fullLogged  atomic.Int64 // unix ns of the last "buffer full" log line

	// The bound's growth and early sealing (bound.go).
	declaredChunks atomic.Int64 // sum of the declared metrics' chunk sizes
	sealingEarly   atomic.Bool  // a pass of early sealing is under way
	earlyLogged    atomic.Int64 // unix ns of the last "sealed early" log line

	// declEpoch counts the snapshots of declared metrics that reconnects
	// take, so that a declaration racing with one is sent again.
	declMu    sync.Mutex
	declEpoch uint64

	defaultChunkSize atomic.Int64

	metrics metricTable

	config atomic.Pointer[[]byte] // JSON of the latest configuration

	startTime Timestamp

	// lifeMu guards the connect attempts and what a successful one starts
	// (phase, attempt, taskCancel, taskDone).
	lifeMu   sync.Mutex
	phase    phase
	attempt  *connectAttempt // the attempt in progress, nil otherwise
	stopping atomic.Bool     // no new declarations or tasks
	stopped  atomic.Bool     // no new points; checked under each metric's lock

	stopCtx    context.Context // cancelled when Stop begins
	stopCancel context.CancelFunc
	taskCancel context.CancelFunc
	taskDone   chan struct{}

	stopOnce     sync.Once
	stopFromTask bool // the first Stop came from the task
	settleOnce   sync.Once
	settled      atomic.Bool           // the stop's outcome is decided; Stop returns
	stopErr      error                 // written once, by settle
	done         chan struct{}         // closed when the source has stopped
	cause        atomic.Pointer[error] // why the source stopped itself
}

// NewSource prepares a source for the management URL (amqp:// or amqps://)
// and token. It does no I/O but reading the TLS files; Connect connects.
//
// amqps:// verifies the broker's certificate and host name (system trust
// store by default). Its URL query parameters: cacertfile (or cafile), the
// PEM CA bundle to trust; certfile and keyfile, a PEM client certificate
// and key; server_name_indication (or server_name), the name to send and
// verify instead of the URL's host; verify=verify_none (or
// no_verify_ssl=1) turns verification off, with a warning. heartbeat (in
// seconds) is WithHeartbeat's setting; connection_timeout, channel_max and
// auth_mechanism (e.g. external) are passed on to amqp091-go. Other parameters, and TLS ones on amqp://, are
// refused with ErrInvalid. The data connection keeps the management URL's
// scheme and TLS parameters when the manager names a vhost.
func NewSource(url, token string, opts ...Option) (*Source, error) {
	if err := validateToken(token); err != nil {
		return nil, err
	}
	if _, err := amqpkit.ParseURL(url); err != nil {
		return nil, err
	}
	given := options{chunkSize: 1, maxBuffered: DefaultMaxBufferedPoints, rpcTimeout: DefaultRPCTimeout, reconnectTimeout: DefaultReconnectTimeout}
	o, err := completeOptions(url, &given, opts)
	if err != nil {
		return nil, err
	}
	s := &Source{
		url:       url,
		token:     token,
		given:     given,
		opts:      o,
		log:       o.logger.With("token", token),
		budget:    newPointBudget(o.maxBuffered),
		startTime: Now(),
		done:      make(chan struct{}),
	}
	s.stopCtx, s.stopCancel = context.WithCancel(context.Background())
	s.budget.stop = s.stopCtx.Done()
	s.budget.onFull = s.onBufferFull
	if o.heartbeat == 0 {
		s.log.Warn("heartbeat=0: the broker chooses the heartbeat (RabbitMQ: 60 s), so a silent connection may go unnoticed for 90 s or more")
	}
	if amqpkit.TLSVerificationOff(url, o.tls) {
		s.log.Warn("TLS certificate and host name verification is OFF for this source: anyone on the path can read the password and the data")
	}
	s.defaultChunkSize.Store(int64(o.chunkSize))
	s.handlers = s.rpcHandlers()
	return s, nil
}

// rpcHandlers serve the RPCs the manager sends, with the current options.
func (s *Source) rpcHandlers() map[string]amqpkit.Handler {
	return map[string]amqpkit.Handler{
		"discover": amqpkit.Discover(s.startTime.Time(), VersionString, s.opts.clientVersion),
		"config":   s.onConfigRPC,
	}
}

// completeOptions applies opts to given (the options as the user gave
// them) and returns them checked and completed (defaults filled in, the
// heartbeat settled with the URL's).
func completeOptions(url string, given *options, opts []Option) (options, error) {
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(given); err != nil {
			return options{}, err
		}
	}
	o := *given
	if o.logger == nil {
		o.logger = defaultLogger()
	}
	var err error
	if o.heartbeat, err = heartbeatFor(url, o.heartbeat); err != nil {
		return options{}, err
	}
	if o.chunkSize > o.maxBuffered {
		return options{}, fmt.Errorf("%w: chunk size %d exceeds the buffer of %d points and could never fill", ErrInvalid, o.chunkSize, o.maxBuffered)
	}
	uri, err := amqpkit.ParseURL(url)
	if err != nil {
		return options{}, err
	}
	if uri.Scheme == "amqps" {
		// Read the CA and certificate files once now, so that a typo fails
		// here rather than at the first connect; they are read again on
		// every connect, which picks renewed certificates up.
		if _, err := amqpkit.TLSConfig(url, o.tls); err != nil {
			return options{}, fmt.Errorf("%w: broker URL %s: %v", ErrInvalid, RedactURL(url), err)
		}
	} else if o.tls != nil {
		return options{}, fmt.Errorf("%w: WithTLSConfig needs an amqps:// URL, not %s", ErrInvalid, RedactURL(url))
	}
	return o, nil
}

// Configure applies options before Connect, as if they had been given to
// NewSource: a layer that learns its settings one by one (the C library's
// setters) gives them to the one Source it made. Nothing is applied if
// one is refused. After Connect (or while it runs) it fails with
// ErrInvalid. WithChunkSize here is SetChunkSize.
func (s *Source) Configure(opts ...Option) error {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	switch {
	case s.stopping.Load():
		return s.stoppedErr()
	case s.phase != phaseIdle:
		return fmt.Errorf("%w: source %q: settings can only be changed before connecting", ErrInvalid, s.token)
	}
	given := s.given
	given.chunkSize = int(s.defaultChunkSize.Load())
	o, err := completeOptions(s.url, &given, opts)
	if err != nil {
		return err
	}
	var tooLarge error
	s.metrics.each(func(m *metric) {
		m.mu.Lock()
		size := m.chunkSize
		m.mu.Unlock()
		if size > o.maxBuffered && tooLarge == nil {
			tooLarge = &MetricError{Metric: m.name, Err: fmt.Errorf("%w: chunk size %d exceeds a buffer of %d points", ErrInvalid, size, o.maxBuffered)}
		}
	})
	if tooLarge != nil {
		return tooLarge
	}
	s.given, s.opts = given, o
	s.log = o.logger.With("token", s.token)
	s.handlers = s.rpcHandlers()
	s.defaultChunkSize.Store(int64(o.chunkSize))
	s.budget.limit.Store(int64(o.maxBuffered))
	s.fitBound()
	return nil
}

func (s *Source) connSettings() connSettings {
	return connSettings{tls: s.opts.tls, heartbeat: s.opts.heartbeat}
}

// Token returns the source's token.
func (s *Source) Token() string { return s.token }

// pub is the publisher, nil before Connect has opened the data connection.
func (s *Source) pub() *publisher { return s.pubPtr.Load() }

func (s *Source) withRPCTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.opts.rpcTimeout)
}

// phase is where a Source is in its life. Stopping is not a phase but the
// stopping flag, which any phase may meet.
type phase int

const (
	phaseIdle       phase = iota // not connected: new, or the last connect attempt failed
	phaseConnecting              // a connect attempt runs
	phaseConnected
)

// connectAttempt is one run of Connect.
type connectAttempt struct {
	ctx    context.Context // ends with the caller's context or when Stop begins
	cancel context.CancelFunc
	done   chan struct{} // closed once the attempt has committed or been undone
}

// Connect registers with the manager, opens the data connection, hands the
// initial configuration to the config handler and starts the task. It is
// the reference's connect(), bounded by ctx.
//
// A Connect that fails, or whose ctx ends first, leaves the source as it
// was before: its connections are closed, its goroutines have ended and
// metrics its config handler declared are undeclared again, so Connect
// may simply be called again. A Connect while another one runs waits for
// it (within ctx); once connected, Connect fails with ErrInvalid. Stop
// cancels a Connect in progress. A management queue still held by another
// connection (a half-open one of a restarted process) is waited for,
// within ctx, as a reconnect waits for it.
func (s *Source) Connect(ctx context.Context) error {
	ctx, cancel := s.withRPCTimeout(ctx)
	defer cancel()
	a, err := s.beginAttempt(ctx)
	if err != nil {
		return err
	}
	err = s.connect(a.ctx)
	if err == nil && s.commit(a) {
		return nil
	}
	s.undo(a)
	switch {
	case s.stopping.Load():
		return s.stoppedErr()
	case err == nil:
		err = a.ctx.Err()
	}
	return fmt.Errorf("source %q: connect: %w", s.token, err)
}

// beginAttempt makes the caller's attempt the one in progress, waiting
// (within ctx) for an earlier one to end.
func (s *Source) beginAttempt(ctx context.Context) (*connectAttempt, error) {
	for {
		s.lifeMu.Lock()
		earlier := s.attempt
		switch {
		case s.stopping.Load():
			s.lifeMu.Unlock()
			return nil, s.stoppedErr()
		case s.phase == phaseConnected:
			s.lifeMu.Unlock()
			return nil, fmt.Errorf("%w: source %q already connected", ErrInvalid, s.token)
		case earlier == nil:
			a := &connectAttempt{done: make(chan struct{})}
			var cancel context.CancelFunc
			a.ctx, cancel = context.WithCancel(ctx)
			// Stop cancels the attempt: it is undone and fails. The
			// attempt's end unregisters that, so that a source retrying
			// for days does not pile registrations up.
			unwatch := context.AfterFunc(s.stopCtx, cancel)
			a.cancel = func() { unwatch(); cancel() }
			s.attempt, s.phase = a, phaseConnecting
			s.lifeMu.Unlock()
			return a, nil
		}
		s.lifeMu.Unlock()
		select {
		case <-earlier.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("source %q: connect: an earlier connect did not end in time: %w", s.token, ctx.Err())
		}
	}
}

// commit makes a connected attempt count, unless its context ended (or
// Stop began) first: from here on the source is connected, and the
// management link is supervised and the task runs. Deciding under lifeMu
// against the attempt's context is what lets a caller that cancels an
// attempt know it cannot connect any more.
func (s *Source) commit(a *connectAttempt) bool {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	if a.ctx.Err() != nil || s.stopping.Load() {
		return false
	}
	s.phase, s.attempt = phaseConnected, nil
	a.cancel()
	close(a.done)
	go s.superviseMgmt(s.link())
	s.startTask()
	return true
}

// undo takes back what a failed attempt set up, before the next attempt
// may begin: the data connection (points the config handler's metrics
// took are dropped and counted so), the management link, and the
// declarations made under a registration that did not complete.
func (s *Source) undo(a *connectAttempt) {
	a.cancel()
	// Under declMu, so that a declaration racing with the undo either
	// completes first (and is undone) or finds no publisher (and fails).
	s.declMu.Lock()
	s.metrics.each(func(m *metric) {
		m.mu.Lock()
		m.declared = false
		m.declaration = nil
		m.mu.Unlock()
	})
	// No Send can add to a chunk now (no metric is declared): the
	// publisher and what it holds can go.
	pub := s.pubPtr.Swap(nil)
	s.declMu.Unlock()
	if pub != nil {
		s.metrics.each(func(m *metric) {
			m.mu.Lock()
			s.dropPoints(len(m.open))
			m.open = nil
			m.mu.Unlock()
		})
		pub.close()
		s.dropPoints(pub.unconfirmedPoints())
	}
	s.dropLink()
	s.lifeMu.Lock()
	s.phase, s.attempt = phaseIdle, nil
	close(a.done)
	s.lifeMu.Unlock()
}

// dropPoints forgets n accepted points that will never be published.
func (s *Source) dropPoints(n int) {
	if n > 0 {
		s.stats.pointsDropped.Add(uint64(n))
		s.budget.release(n)
	}
}

// Connected tells whether Connect has succeeded and Stop has not begun.
func (s *Source) Connected() bool {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	return s.phase == phaseConnected && !s.stopping.Load()
}

func (s *Source) connect(ctx context.Context) error {
	link, err := s.openLink(ctx)
	if err != nil {
		return err
	}
	if !s.setLink(link) {
		return s.stoppedErr()
	}
	reply, err := link.call(ctx, "source.register", nil)
	if err != nil {
		return err
	}
	var address, exchange string
	if err := decodeField(reply, "dataServerAddress", &address, true); err != nil {
		return err
	}
	if err := decodeField(reply, "dataExchange", &exchange, true); err != nil {
		return err
	}
	dataURL, err := DataURL(s.url, address)
	if err != nil {
		return err
	}
	s.dataAddress = address
	pub := newPublisher(dataURL, exchange, s.token, s.connSettings(), s.log, &s.stats, s.budget.release)
	pub.reconnectTimeout = s.opts.reconnectTimeout
	pub.fatal = s.fail
	pub.onRepublish = s.opts.onRepublish
	if err := pub.start(ctx); err != nil {
		return err
	}
	s.pubPtr.Store(pub)
	if raw, ok := reply["config"]; ok && !bytes.Equal(raw, []byte("null")) {
		var config map[string]any
		if err := unmarshalNumbers(raw, &config); err != nil || config == nil {
			return &RPCError{Function: "source.register", Message: "config is not a JSON object"}
		}
		if err := s.applyConfig(ctx, config, raw); err != nil {
			return err
		}
	}
	return nil
}

func decodeField(reply map[string]json.RawMessage, key string, into *string, required bool) error {
	raw, ok := reply[key]
	if !ok {
		if required {
			return &RPCError{Function: "source.register", Message: fmt.Sprintf("reply lacks %q", key)}
		}
		return nil
	}
	if err := json.Unmarshal(raw, into); err != nil {
		return &RPCError{Function: "source.register", Message: fmt.Sprintf("%q is not a string", key)}
	}
	return nil
}

// startTask starts the task, if any; lifeMu is held.
func (s *Source) startTask() {
	if s.opts.task == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), taskKey{}, s))
	s.taskCancel = cancel
	s.taskDone = make(chan struct{})
	go func() {
		defer close(s.taskDone)
		err := runTask(ctx, s, s.opts.task)
		if err != nil && ctx.Err() == nil {
			s.log.Error("task failed, stopping the source", "error", err)
			s.fail(fmt.Errorf("task: %w", err))
		}
	}()
}

// runTask calls the task, turning a panic into an error: the source stops
// with it instead of taking the process down.
func runTask(ctx context.Context, s *Source, task Task) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("task panicked", "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("task panicked: %v", r)
		}
	}()
	return task(ctx, s)
}

// taskKey marks the task's context, so that Stop called from inside the task
// does not wait for the task to end.
type taskKey struct{}

// fail stops the source because of err, from a goroutine of its own.
func (s *Source) fail(err error) {
	s.cause.CompareAndSwap(nil, &err)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.rpcTimeout)
		defer cancel()
		_ = s.Stop(ctx)
	}()
}

// stoppedErr is the error for calls on a stopped source: ErrStopped, and the
// reason when the source stopped itself (a lost connection wraps ErrConnect).
func (s *Source) stoppedErr() error {
	if cause := s.Err(); cause != nil {
		return fmt.Errorf("%w: %w", ErrStopped, cause)
	}
	return ErrStopped
}

// Stopped tells whether the source has begun to stop (Stop was called, or
// it stops on its own): it takes no new work. Done says when it has ended.
func (s *Source) Stopped() bool { return s.stopping.Load() }

// Done is closed when the source has stopped.
func (s *Source) Done() <-chan struct{} { return s.done }

// Err says why the source stopped itself (a task error or a lost
// connection); nil while running and after a plain Stop.
func (s *Source) Err() error {
	if cause := s.cause.Load(); cause != nil {
		return *cause
	}
	return nil
}

// Run connects, then blocks until ctx ends (and stops the source, waiting
// up to the RPC timeout for the flush) or the source stops on its own. It
// returns the reason the source stopped, nil for a cancelled ctx.
func (s *Source) Run(ctx context.Context) error {
	if err := s.Connect(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		stopCtx, cancel := context.WithTimeout(context.Background(), s.opts.rpcTimeout)
		defer cancel()
		return s.Stop(stopCtx)
	case <-s.done:
		return s.Err()
	}
}

// usable fails calls that need a running source.
func (s *Source) usable() error {
	if s.stopping.Load() {
		return s.stoppedErr()
	}
	if s.pub() == nil {
		return s.notConnectedErr()
	}
	return nil
}

// notConnectedErr is the error of calls that need a connection, made
// before Connect (or while a failed attempt is undone).
func (s *Source) notConnectedErr() error {
	if s.stopping.Load() {
		return s.stoppedErr()
	}
	return fmt.Errorf("%w: source %q is not connected; call Connect first", ErrInvalid, s.token)
}

// Stop ends the task, flushes, then closes both connections. Unlike the
// reference, buffered points are published, not dropped: Stop waits (up to
// ctx) for the broker to confirm them, riding out an outage in progress.
// Stop returns when ctx ends, whatever the network or the broker do: points
// the broker has not confirmed by then are given up, and the error, the log
// and Stats.PointsDropped say how many (some may still arrive: unconfirmed
// is not undelivered). Closing the connections may then go on in the
// background for a few seconds. Stop is idempotent: later calls wait for
// the first one's shutdown and return its result. Called from the task with
// the task's own context, it does not wait for the task, and the flush gets
// the RPC timeout.
func (s *Source) Stop(ctx context.Context) error {
	fromTask := ctx.Value(taskKey{}) == s
	if fromTask {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), s.opts.rpcTimeout)
		defer cancel()
	}
	s.stopOnce.Do(func() {
		s.stopping.Store(true)
		s.stopFromTask = fromTask
		s.stopCancel()
		go s.stop(ctx)
	})
	select {
	case <-s.done:
	case <-ctx.Done():
		s.settle(fmt.Errorf("stop timed out: %w", ctx.Err()))
	}
	return s.stopErr
}

func (s *Source) stop(ctx context.Context) {
	defer close(s.done)
	s.lifeMu.Lock()
	attempt, taskCancel, taskDone := s.attempt, s.taskCancel, s.taskDone
	s.lifeMu.Unlock()
	if attempt != nil {
		// Cancelled with stopCtx, it cannot commit any more: its undo
		// closes what it opened.
		select {
		case <-attempt.done:
		case <-ctx.Done():
		}
	}
	if taskCancel != nil {
		taskCancel()
		if !s.stopFromTask {
			select {
			case <-taskDone:
			case <-ctx.Done():
			}
		}
	}
	// No new points from here on; a staging layer hands over what it
	// holds in the hook (HandOver takes staged points after the stop too),
	// and then holds nothing: the leases' space goes back.
	s.stopped.Store(true)
	if s.opts.beforeStop != nil {
		s.opts.beforeStop()
	}
	s.endLeases()
	var flushErr error
	if pub := s.pub(); pub != nil {
		s.sealAll()
		flushErr = pub.waitConfirmed(ctx, pub.lastSealed())
	}
	s.settle(flushErr)
	s.shutdown()
}

// settle decides the stop's outcome, once: at the end of the flush, or
// when the caller's Stop timeout ends first. Whatever the broker has not
// confirmed by then is given up and counted; nothing the network does
// afterwards changes the outcome.
func (s *Source) settle(flushErr error) {
	s.settleOnce.Do(func() {
		defer s.settled.Store(true)
		s.stopped.Store(true)
		var errs []error
		s.lifeMu.Lock()
		taskDone := s.taskDone
		s.lifeMu.Unlock()
		if taskDone != nil && !s.stopFromTask {
			select {
			case <-taskDone:
			default:
				errs = append(errs, errors.New("task did not end"))
			}
		}
		if pub := s.pub(); pub != nil {
			s.sealAll()
			if lost := pub.abandon(); lost > 0 {
				s.stats.pointsDropped.Add(uint64(lost))
				s.budget.release(lost) // no longer buffered: gone
				s.log.Error("stopped with points the broker never confirmed: they are lost", "points", lost, "error", flushErr)
				if flushErr == nil {
					flushErr = errors.New("the publisher ended first")
				}
				errs = append(errs, fmt.Errorf("flush on stop, %d points not delivered: %w", lost, flushErr))
			}
		}
		if len(errs) > 0 {
			s.stopErr = fmt.Errorf("source %q: stop: %w", s.token, errors.Join(errs...))
		}
	})
}

// shutdown closes both connections, each within a few seconds.
func (s *Source) shutdown() {
	s.stopping.Store(true)
	s.stopped.Store(true)
	if pub := s.pub(); pub != nil {
		pub.close()
	}
	s.closeLinks()
}
