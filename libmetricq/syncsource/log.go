package syncsource

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/libmetricq/libmetricq/libmetricq"
)

// LogHook receives log lines at or above the level set with SetLogLevel.
// It is called from any goroutine, concurrently.
type LogHook func(level slog.Level, line string)

// LevelOff disables logging.
const LevelOff = slog.Level(1 << 20)

var (
	logHook  atomic.Pointer[LogHook]
	logLevel atomic.Int64
	stderrMu sync.Mutex
)

func init() { logLevel.Store(int64(levelFromEnv())) }

func levelFromEnv() slog.Level {
	level, ok := libmetricq.LogLevelFromEnv()
	if !ok {
		return LevelOff
	}
	return level
}

// SetLogHook sends log lines to h; nil restores the default (stderr).
func SetLogHook(h LogHook) {
	if h == nil {
		logHook.Store(nil)
		return
	}
	logHook.Store(&h)
}

// SetLogLevel sets the least level logged; LevelOff turns logging off.
func SetLogLevel(level slog.Level) { logLevel.Store(int64(level)) }

// LogLevel returns the least level logged.
func LogLevel() slog.Level { return slog.Level(logLevel.Load()) }

// logHandler formats records as "message key=value ..." and hands them to
// the hook or writes them to stderr. It belongs to one source (or none),
// whose URL password it removes from every line.
type logHandler struct {
	src *Source
	ops []func(slog.Handler) slog.Handler // WithAttrs / WithGroup, in order
}

func newLogger(src *Source) *slog.Logger { return slog.New(&logHandler{src: src}) }

func (h *logHandler) Enabled(_ context.Context, level slog.Level) bool {
	return int64(level) >= logLevel.Load()
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return h.with(func(t slog.Handler) slog.Handler { return t.WithAttrs(attrs) })
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	return h.with(func(t slog.Handler) slog.Handler { return t.WithGroup(name) })
}

func (h *logHandler) with(op func(slog.Handler) slog.Handler) slog.Handler {
	ops := append(append([]func(slog.Handler) slog.Handler(nil), h.ops...), op)
	return &logHandler{src: h.src, ops: ops}
}

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	var attrs bytes.Buffer
	var t slog.Handler = slog.NewTextHandler(&attrs, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey) {
				return slog.Attr{}
			}
			return a
		},
	})
	for _, op := range h.ops {
		t = op(t)
	}
	plain := slog.NewRecord(r.Time, r.Level, "", r.PC)
	r.Attrs(func(a slog.Attr) bool { plain.AddAttrs(a); return true })
	_ = t.Handle(ctx, plain)
	line := r.Message
	if rest := bytes.TrimSpace(attrs.Bytes()); len(rest) > 0 {
		line += " " + string(rest)
	}
	if h.src != nil {
		line = h.src.redact(line)
	}
	emit(r.Level, line)
	return nil
}

func emit(level slog.Level, line string) {
	defer func() { _ = recover() }() // runs on the core's goroutines: never let it crash the host
	if hook := logHook.Load(); hook != nil {
		(*hook)(level, line)
		return
	}
	stderrMu.Lock()
	defer stderrMu.Unlock()
	fmt.Fprintf(os.Stderr, "libmetricq: %s: %s\n", level, line)
}

// pkgLog is for messages of this package that concern no source.
var pkgLog = newLogger(nil)
