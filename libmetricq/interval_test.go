package libmetricq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
)

// fakeClock advances only when the schedule sleeps or an update says it
// took time, so the schedule is tested without real sleeps.
type fakeClock struct {
	now    Timestamp
	sleeps []Timedelta
}

func (c *fakeClock) Now() Timestamp { return c.now }

func (c *fakeClock) Sleep(ctx context.Context, d Timedelta) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	return nil
}

type scheduleRun struct {
	clock   *fakeClock
	updates []Timestamp // when each update started
	err     error
}

// runFake runs the schedule until `rounds` updates have run. durations[i]
// is how long update i takes; periodAt[i], when set, is the period assigned
// during update i.
func runFake(t *testing.T, rounds int, durations map[int]Timedelta, periodAt map[int]Timedelta, failAt int) scheduleRun {
	t.Helper()
	clk := &fakeClock{now: 1_000 * Timestamp(Second)}
	run := scheduleRun{clock: clk}
	var period Timedelta
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	update := func(ctx context.Context) error {
		i := len(run.updates)
		run.updates = append(run.updates, clk.now)
		if p, ok := periodAt[i]; ok {
			period = p
		}
		clk.now = clk.now.Add(durations[i])
		if i == failAt {
			return fmt.Errorf("sensor broke")
		}
		if i == rounds-1 {
			cancel()
		}
		return nil
	}
	run.err = runSchedule(ctx, clk, func() Timedelta { return period }, update, slog.New(slog.DiscardHandler))
	return run
}

func offsets(r scheduleRun) []Timedelta {
	start := r.updates[0]
	out := make([]Timedelta, len(r.updates))
	for i, u := range r.updates {
		out[i] = u.Sub(start)
	}
	return out
}

func equalDeltas(a, b []Timedelta) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestScheduleFixedGridWithoutDrift(t *testing.T) {
	r := runFake(t, 4, map[int]Timedelta{0: 300 * Millisecond, 1: 10 * Millisecond, 2: 999 * Millisecond}, map[int]Timedelta{0: Second}, -1)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if want := []Timedelta{0, Second, 2 * Second, 3 * Second}; !equalDeltas(offsets(r), want) {
		t.Fatalf("updates at %v, want %v (first at once, then on the grid)", offsets(r), want)
	}
	if want := []Timedelta{700 * Millisecond, 990 * Millisecond, Millisecond}; !equalDeltas(r.clock.sleeps, want) {
		t.Fatalf("sleeps %v, want %v", r.clock.sleeps, want)
	}
}

func TestScheduleSkipsMissedDeadlines(t *testing.T) {
	// Update 1 takes 3.5 periods: the deadlines at 2 s, 3 s and 4 s are
	// skipped, not run in a burst; the grid stays anchored at the start.
	r := runFake(t, 4, map[int]Timedelta{1: 3500 * Millisecond}, map[int]Timedelta{0: Second}, -1)
	if want := []Timedelta{0, Second, 5 * Second, 6 * Second}; !equalDeltas(offsets(r), want) {
		t.Fatalf("updates at %v, want %v", offsets(r), want)
	}
}

func TestScheduleDeadlineExactlyNowIsMissed(t *testing.T) {
	r := runFake(t, 3, map[int]Timedelta{0: Second}, map[int]Timedelta{0: Second}, -1)
	if want := []Timedelta{0, 2 * Second, 3 * Second}; !equalDeltas(offsets(r), want) {
		t.Fatalf("updates at %v, want %v", offsets(r), want)
	}
}

func TestSchedulePeriodChangeAppliesFromNextDeadline(t *testing.T) {
	// The period changes during update 2 (at 2 s): the next deadline is
	// 2 s + 500 ms, the grid is not re-anchored to the start.
	r := runFake(t, 5, nil, map[int]Timedelta{0: Second, 2: 500 * Millisecond}, -1)
	if want := []Timedelta{0, Second, 2 * Second, 2500 * Millisecond, 3 * Second}; !equalDeltas(offsets(r), want) {
		t.Fatalf("updates at %v, want %v", offsets(r), want)
	}
}

func TestScheduleUnsetPeriodIsAnError(t *testing.T) {
	r := runFake(t, 3, nil, nil, -1)
	if !errors.Is(r.err, ErrInvalid) || len(r.updates) != 1 {
		t.Fatalf("want ErrInvalid after the first update, got %v after %d updates", r.err, len(r.updates))
	}
}

func TestScheduleUpdateErrorStops(t *testing.T) {
	r := runFake(t, 10, nil, map[int]Timedelta{0: Second}, 2)
	if r.err == nil || len(r.updates) != 3 {
		t.Fatalf("want the error of update 2 to end the schedule, got %v after %d updates", r.err, len(r.updates))
	}
}

func TestSchedulePublishErrorsAreRiddenOut(t *testing.T) {
	clk := &fakeClock{}
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	err := runSchedule(ctx, clk, func() Timedelta { return Second }, func(context.Context) error {
		n++
		if n == 3 {
			cancel()
		}
		return fmt.Errorf("wrapped: %w", ErrPublish)
	}, slog.New(slog.DiscardHandler))
	if err != nil || n != 3 {
		t.Fatalf("publish errors must not stop the schedule: %v after %d updates", err, n)
	}
}

func TestIntervalSourcePeriodCannotBeUnset(t *testing.T) {
	s, err := NewIntervalSource("amqp://127.0.0.1/", "source-test", func(context.Context, *IntervalSource) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if s.Period() != 0 {
		t.Fatal("period must start unset")
	}
	if err := s.SetPeriod(Second); err != nil || s.Period() != Second {
		t.Fatalf("SetPeriod: %v, %v", err, s.Period())
	}
	for _, bad := range []Timedelta{0, -Second} {
		if err := s.SetPeriod(bad); !errors.Is(err, ErrInvalid) || s.Period() != Second {
			t.Fatalf("SetPeriod(%d) = %v, period now %v", bad, err, s.Period())
		}
	}
	if err := s.Attach(func(context.Context, *IntervalSource) error { return nil }); !errors.Is(err, ErrInvalid) {
		t.Fatalf("second update function: %v", err)
	}
	later, err := NewIntervalSource("amqp://127.0.0.1/", "source-test", nil)
	if err != nil {
		t.Fatalf("no update function yet: %v", err)
	}
	if err := later.Attach(nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("nil update: %v", err)
	}
}

// An IntervalSource made without an update function starts its schedule
// when one is attached: the grid is anchored then, so the time that passed
// before (a connect long ago) is no missed deadline.
func TestIntervalScheduleStartsWhenAttached(t *testing.T) {
	s, err := NewIntervalSource("amqp://127.0.0.1/", "source-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{now: 1_000 * Timestamp(Second)}
	s.clock = clk
	var logged []string
	s.log = slog.New(recordHandler{&logged})
	if err := s.SetPeriod(Second); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	// Time passes before the update function comes (the goroutine waits
	// for it, and does not look at the clock until then).
	clk.now = clk.now.Add(10 * Second)
	attachedAt := clk.now
	var updates []Timestamp
	if err := s.Attach(func(context.Context, *IntervalSource) error {
		updates = append(updates, clk.now)
		if len(updates) == 3 {
			cancel()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := []Timestamp{attachedAt, attachedAt.Add(Second), attachedAt.Add(2 * Second)}
	if fmt.Sprint(updates) != fmt.Sprint(want) {
		t.Errorf("updates at %v, want %v", updates, want)
	}
	if len(logged) != 0 {
		t.Errorf("logged %q", logged)
	}
}

// A schedule cancelled before any update function came ends quietly.
func TestIntervalScheduleNeverAttached(t *testing.T) {
	s, err := NewIntervalSource("amqp://127.0.0.1/", "source-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.run(ctx); err != nil {
		t.Fatalf("run without an update function: %v", err)
	}
}

// recordHandler keeps the messages logged at warning level and above.
type recordHandler struct{ messages *[]string }

func (h recordHandler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelWarn
}
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	*h.messages = append(*h.messages, r.Message)
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

// An update that stops the source (a flush that outlasts the period) ends
// the schedule without a word about the deadline it overran.
func TestScheduleEndsQuietlyWhenAnUpdateStopsTheSource(t *testing.T) {
	clk := &fakeClock{now: 1_000 * Timestamp(Second)}
	var logged []string
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rounds := 0
	update := func(context.Context) error {
		rounds++
		if rounds == 2 {
			cancel()
			clk.now = clk.now.Add(3 * Second) // the stop's flush
		}
		return nil
	}
	err := runSchedule(ctx, clk, func() Timedelta { return Second }, update, slog.New(recordHandler{&logged}))
	if err != nil || rounds != 2 || len(logged) != 0 {
		t.Fatalf("schedule: %v after %d rounds, logged %q", err, rounds, logged)
	}
}
