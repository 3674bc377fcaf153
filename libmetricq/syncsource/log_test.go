package syncsource

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
)

type captured struct {
	mu    sync.Mutex
	lines []string
	level []slog.Level
}

func capture(t *testing.T) *captured {
	c := &captured{}
	SetLogHook(func(level slog.Level, line string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.lines = append(c.lines, line)
		c.level = append(c.level, level)
	})
	old := LogLevel()
	t.Cleanup(func() { SetLogHook(nil); SetLogLevel(old) })
	return c
}

func (c *captured) all() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines, "\n")
}

func TestLogHandler(t *testing.T) {
	c := capture(t)
	SetLogLevel(slog.LevelInfo)
	s, err := New("amqp://user:pa%24s-s3cret@127.0.0.1:1/", "log-test")
	if err != nil {
		t.Fatal(err)
	}
	log := s.log.With("token", "log-test")
	log.Debug("hidden")
	log.Info("hello world", "url", "amqp://user:pa$s-s3cret@host/", "n", 3)
	log.WithGroup("g").Warn("grouped", "k", "v")
	if got := c.all(); got != "hello world token=log-test url=amqp://user:xxxxx@host/ n=3\ngrouped token=log-test g.k=v" {
		t.Errorf("lines:\n%s", got)
	}
	if c.level[0] != slog.LevelInfo || c.level[1] != slog.LevelWarn {
		t.Errorf("levels %v", c.level)
	}

	c.lines = nil
	SetLogLevel(LevelOff)
	log.Error("nothing")
	if got := c.all(); got != "" {
		t.Errorf("logged while off: %q", got)
	}
}
