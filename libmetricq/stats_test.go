package libmetricq

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPointBudgetWaitsForSpace(t *testing.T) {
	var stats counters
	b := newPointBudget(3)
	ctx := context.Background()
	if err := b.acquire(ctx, 3, &stats); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := b.acquire(short, 1, &stats); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a full budget must time out, got %v", err)
	}
	got := make(chan error, 1)
	go func() { got <- b.acquire(ctx, 2, &stats) }()
	for b.waiters.Load() == 0 { // the waiter has registered before we free space
		time.Sleep(time.Millisecond)
	}
	b.release(2)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if b.used.Load() != 3 || stats.bufferFullWaits.Load() != 2 {
		t.Fatalf("used %d, waits %d", b.used.Load(), stats.bufferFullWaits.Load())
	}
	if err := b.acquire(ctx, 4, &stats); !errors.Is(err, ErrInvalid) {
		t.Fatalf("more than the whole budget must be refused at once, got %v", err)
	}
}

// Only real waits count as waits, and only deadlines as timeouts: a try
// with an ended context (a first try before waiting, a reservation ahead)
// and a wait that a cancellation (a stop) ends are neither.
func TestPointBudgetCountsWaitsAndTimeouts(t *testing.T) {
	var stats counters
	b := newPointBudget(1)
	if err := b.acquire(context.Background(), 1, &stats); err != nil {
		t.Fatal(err)
	}
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.acquire(ended, 1, &stats); !errors.Is(err, context.Canceled) {
		t.Fatalf("try with an ended context: %v", err)
	}
	if w, to := stats.bufferFullWaits.Load(), stats.bufferFullTimeouts.Load(); w != 0 || to != 0 {
		t.Fatalf("a try counted: waits %d, timeouts %d", w, to)
	}
	waiting, cancelWait := context.WithCancel(context.Background())
	got := make(chan error, 1)
	go func() { got <- b.acquire(waiting, 1, &stats) }()
	for b.waiters.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancelWait()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancelShort()
	if err := b.acquire(short, 1, &stats); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait until the deadline: %v", err)
	}
	if w, to := stats.bufferFullWaits.Load(), stats.bufferFullTimeouts.Load(); w != 2 || to != 1 {
		t.Fatalf("waits %d (want 2), timeouts %d (want 1)", w, to)
	}
	// A deadline already past (a non-blocking send) is refused at once:
	// a timeout, reported, but no wait.
	full := 0
	b.onFull = func() { full++ }
	past, cancelPast := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancelPast()
	if err := b.acquire(past, 1, &stats); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("past deadline: %v", err)
	}
	if w, to := stats.bufferFullWaits.Load(), stats.bufferFullTimeouts.Load(); w != 2 || to != 2 || full != 1 {
		t.Fatalf("past deadline: waits %d (want 2), timeouts %d (want 2), reported %d (want 1)", w, to, full)
	}
}

func TestChunkSizeValidation(t *testing.T) {
	s, err := NewSource("amqp://127.0.0.1/", "source-test")
	if err != nil {
		t.Fatal(err)
	}
	if s.ChunkSize() != 1 {
		t.Fatalf("default chunk size %d, want 1 as in the reference", s.ChunkSize())
	}
	if err := s.SetChunkSize(-1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("negative: %v", err)
	}
	if err := s.SetChunkSize(ChunkSizeManual); err != nil || s.ChunkSize() != 0 {
		t.Fatalf("manual: %v", err)
	}
	if err := s.SetChunkSize(10); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.MetricChunkSize("a.b"); n != 10 {
		t.Fatalf("a metric created now takes the default: %d", n)
	}
	if err := s.SetMetricChunkSize("a.b", 5); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMetricChunkSize("a.*", 5); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad name: %v", err)
	}
	if err := s.SetMetricChunkSize("a.c", -3); !errors.Is(err, ErrInvalid) {
		t.Fatalf("negative per metric: %v", err)
	}
	if n, _ := s.MetricChunkSize("a.b"); n != 5 {
		t.Fatalf("per-metric chunk size %d", n)
	}
	if _, err := NewSource("amqp://127.0.0.1/", "source-test", WithChunkSize(-2)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("WithChunkSize(-2): %v", err)
	}
	if _, err := NewSource("amqp://127.0.0.1/", "source-test", WithMaxBufferedPoints(0)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("WithMaxBufferedPoints(0): %v", err)
	}
}

func TestCallsBeforeConnect(t *testing.T) {
	s, err := NewSource("amqp://127.0.0.1/", "source-test")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Send(ctx, "a.b", 1, 1); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "not connected") {
		t.Fatalf("send before connect: %v", err)
	}
	if err := s.DeclareMetricList(ctx, []string{"a.b"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("declare before connect: %v", err)
	}
	if err := s.Flush(ctx); !errors.Is(err, ErrInvalid) {
		t.Fatalf("flush before connect: %v", err)
	}
	if _, err := NewSource("::bad", "source-test"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad URL: %v", err)
	}
}

// Many Sends racing for a small buffer while others free space: none may
// sleep through a release (a failed attempt never inflates the count, so it
// cannot make another Send wait needlessly), and the count never exceeds
// the bound.
func TestPointBudgetNoLostWakeup(t *testing.T) {
	var stats counters
	b := newPointBudget(3)
	done := make(chan struct{})
	var over atomic.Bool
	for w := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			n := 1 + w%2
			for range 2000 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := b.acquire(ctx, n, &stats)
				cancel()
				if err != nil {
					t.Error(err)
					return
				}
				if b.used.Load() > b.limit.Load() {
					over.Store(true)
				}
				b.release(n)
			}
		}()
	}
	for range 8 {
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("a Send waits forever although space was freed")
		}
	}
	if over.Load() || b.used.Load() != 0 {
		t.Fatalf("used %d (exceeded the limit: %v)", b.used.Load(), over.Load())
	}
}

// A Send waiting for space gives up when the source stops.
func TestPointBudgetStop(t *testing.T) {
	var stats counters
	stop := make(chan struct{})
	b := newPointBudget(1)
	b.stop = stop
	if err := b.acquire(context.Background(), 1, &stats); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- b.acquire(context.Background(), 1, &stats) }()
	for b.waiters.Load() == 0 { // the acquire waits for space now
		runtime.Gosched()
	}
	close(stop)
	if err := <-got; !errors.Is(err, ErrStopped) {
		t.Fatalf("want ErrStopped, got %v", err)
	}
}
