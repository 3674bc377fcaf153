package libmetricq

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
)

// ConfigHandler receives the source's configuration: once from the register
// reply during Connect, then on every "config" RPC. A typical handler sets
// rates or periods and declares metrics. An error fails Connect (initially)
// or is sent back to the caller of the RPC.
type ConfigHandler func(ctx context.Context, s *Source, config map[string]any) error

// Task is the user's main loop, started after Connect. Its context ends when
// the source stops. A non-nil error stops the source with that error.
type Task func(ctx context.Context, s *Source) error

// DefaultMaxBufferedPoints bounds the points a source holds that the broker
// has not confirmed yet: about 16 MiB of timestamps and values. Unless
// WithMaxBufferedPoints sets a bound, the bound grows beyond it to twice
// the chunk sizes of the declared metrics (see WithMaxBufferedPoints).
const DefaultMaxBufferedPoints = 1 << 20

// DefaultRPCTimeout is how long Connect and DeclareMetrics wait for the
// manager when the context has no deadline, as in the reference.
const DefaultRPCTimeout = 60 * time.Second

type options struct {
	onConfig         ConfigHandler
	task             Task
	logger           *slog.Logger
	chunkSize        int
	maxBuffered      int
	boundGiven       bool // maxBuffered was set, and stays as set
	clientVersion    string
	rpcTimeout       time.Duration
	reconnectTimeout time.Duration
	tls              *tls.Config
	heartbeat        time.Duration                                      // 0 until set; NewSource resolves it
	onRepublish      func(name string, times []int64, values []float64) // tests
	beforeStop       func()
}

// Option configures a Source.
type Option func(*options) error

// WithConfigHandler sets the handler for the manager's configuration.
func WithConfigHandler(h ConfigHandler) Option {
	return func(o *options) error { o.onConfig = h; return nil }
}

// WithBeforeStop sets a function that runs once when the source stops (by
// Stop, or on its own: a failed task, a connection lost for good), after
// the task has ended (or the stop gave up waiting for it, or the stop
// comes from the task itself) and after the source stopped taking new
// points, before its last flush. A layer that stages accepted points in
// front of the Source (see Lease) hands them over in it with HandOver, so
// that the stop publishes them.
func WithBeforeStop(fn func()) Option {
	return func(o *options) error { o.beforeStop = fn; return nil }
}

// WithTask sets the task started after Connect.
func WithTask(t Task) Option {
	return func(o *options) error { o.task = t; return nil }
}

// WithLogger sets the logger. The default writes warnings and errors to
// stderr; the environment variable METRICQ_LOG (debug, info, warn, error,
// off) changes its level.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalid)
		}
		o.logger = l
		return nil
	}
}

// WithChunkSize sets the source's default chunk size (see SetChunkSize).
func WithChunkSize(n int) Option {
	return func(o *options) error {
		if err := validateChunkSize(n); err != nil {
			return err
		}
		o.chunkSize = n
		return nil
	}
}

// WithMaxBufferedPoints bounds the points held until the broker confirms
// them. Send waits, up to its context, while the bound is reached.
//
// Without it the bound is DefaultMaxBufferedPoints or twice the sum of the
// declared metrics' chunk sizes, whichever is larger: the open chunks of
// all metrics always fit, with as much again for chunks on their way, so
// a source with 100,000 metrics of chunk size 100 gets 20,000,000 points.
// A bound smaller than the open chunks need still works: when the buffer
// is full and mostly open chunks, they are published before they fill
// (smaller messages, logged), since otherwise no chunk could ever fill
// and every Send would wait for space that never frees.
func WithMaxBufferedPoints(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("%w: max buffered points must be at least 1, got %d", ErrInvalid, n)
		}
		o.maxBuffered, o.boundGiven = n, true
		return nil
	}
}

// WithClientVersion sets the application version reported by discover.
func WithClientVersion(v string) Option {
	return func(o *options) error { o.clientVersion = v; return nil }
}

// WithRPCTimeout sets the wait for the manager used when a context has no
// deadline of its own.
func WithRPCTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: rpc timeout must be positive", ErrInvalid)
		}
		o.rpcTimeout = d
		return nil
	}
}

// DefaultReconnectTimeout is how long a source keeps trying to restore a
// lost connection before it stops with ErrConnect: the reference's
// management watchdog, applied to both connections.
const DefaultReconnectTimeout = 10 * time.Minute

// WithReconnectTimeout sets how long a lost connection may stay down. When
// it is exceeded the source stops itself: Err, and every later call, report
// an error wrapping ErrConnect with the last failure's reason.
func WithReconnectTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: reconnect timeout must be positive", ErrInvalid)
		}
		o.reconnectTimeout = d
		return nil
	}
}

// WithTLSConfig sets the TLS configuration of amqps:// connections (both
// the management and the data connection), in place of the URL's TLS query
// parameters. The configuration is cloned for each connection; an empty
// ServerName becomes the host connected to. It needs an amqps:// URL.
func WithTLSConfig(c *tls.Config) Option {
	return func(o *options) error {
		if c == nil {
			return fmt.Errorf("%w: nil TLS configuration", ErrInvalid)
		}
		o.tls = c.Clone()
		return nil
	}
}

// WithHeartbeat sets the AMQP heartbeat interval of both connections
// (default DefaultHeartbeat, 6 s; the URL parameter heartbeat=<seconds> sets
// the same). A connection whose peer falls silent is given up after about
// 1.5 intervals, and a write that cannot complete after 2 intervals, and
// then the source reconnects. Shorter finds a dead network sooner but
// costs a few bytes per interval and connection and risks giving up a
// connection whose broker is merely stalled; longer tolerates stalls but
// leaves a dead connection, and the exclusive queue the broker keeps for
// it, in place longer. The broker may lower the interval (its own
// heartbeat setting caps it). Whole seconds, 1 s to 65535 s.
func WithHeartbeat(d time.Duration) Option {
	return func(o *options) error {
		if err := validateHeartbeat(d); err != nil {
			return err
		}
		o.heartbeat = d
		return nil
	}
}

func validateHeartbeat(d time.Duration) error {
	if d < time.Second || d > 65535*time.Second || d%time.Second != 0 {
		return fmt.Errorf("%w: heartbeat must be whole seconds from 1 s to 65535 s, got %v", ErrInvalid, d)
	}
	return nil
}

// ChunkSizeManual turns automatic chunking off: points are published by
// Flush (and Stop) only. The reference spells it None.
const ChunkSizeManual = 0

func validateChunkSize(n int) error {
	if n < 0 {
		return fmt.Errorf("%w: chunk size must be >= 1, or %d for manual flushing; got %d", ErrInvalid, ChunkSizeManual, n)
	}
	return nil
}

// LogLevelFromEnv reads METRICQ_LOG. ok is false for "off".
func LogLevelFromEnv() (level slog.Level, ok bool) {
	switch strings.ToLower(strings.TrimSpace(os.Getenv("METRICQ_LOG"))) {
	case "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "error":
		return slog.LevelError, true
	case "off", "none", "quiet":
		return 0, false
	default:
		return slog.LevelWarn, true
	}
}

func defaultLogger() *slog.Logger {
	level, ok := LogLevelFromEnv()
	if !ok {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}
