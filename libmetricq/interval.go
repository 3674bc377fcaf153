package libmetricq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// UpdateFunc produces the points of one IntervalSource round.
type UpdateFunc func(ctx context.Context, s *IntervalSource) error

// IntervalSource calls an update function at a fixed period, as the
// reference IntervalSource does: the first update runs at once, deadlines
// stay on a grid anchored at the start (no drift), missed deadlines are
// skipped with a warning (never run in a burst), and a period change takes
// effect from the next deadline. An error from update stops the source,
// except ErrPublish, which is logged and ridden out.
type IntervalSource struct {
	*Source
	period   atomic.Int64 // ns; 0 until set
	update   atomic.Pointer[UpdateFunc]
	attached chan struct{} // closed when update is set
	clock    clock
}

// NewIntervalSource prepares an IntervalSource. Set the period before the
// first update ends, with SetPeriod (typically in the config handler).
// update may be nil: the schedule then starts, and its grid is anchored,
// when Attach gives one (a layer whose update function comes after
// connecting uses that).
func NewIntervalSource(url, token string, update UpdateFunc, opts ...Option) (*IntervalSource, error) {
	s := &IntervalSource{attached: make(chan struct{}), clock: wallClock{}}
	task := func(ctx context.Context, _ *Source) error { return s.run(ctx) }
	src, err := NewSource(url, token, append(opts, WithTask(task))...)
	if err != nil {
		return nil, err
	}
	s.Source = src
	if update != nil {
		_ = s.Attach(update)
	}
	return s, nil
}

// Attach sets the update function of a source made without one and starts
// the schedule (at once if connected, else when Connect succeeds). It can
// be set once.
func (s *IntervalSource) Attach(update UpdateFunc) error {
	if update == nil {
		return fmt.Errorf("%w: nil update function", ErrInvalid)
	}
	if !s.update.CompareAndSwap(nil, &update) {
		return fmt.Errorf("%w: the update function is attached already", ErrInvalid)
	}
	close(s.attached)
	return nil
}

// SetPeriod sets the time between updates. A period cannot be unset: zero
// and negative values are refused.
func (s *IntervalSource) SetPeriod(d Timedelta) error {
	if d <= 0 {
		return fmt.Errorf("%w: period must be positive, got %s (a period cannot be unset)", ErrInvalid, d)
	}
	s.period.Store(int64(d))
	return nil
}

// Period returns the period, 0 while unset.
func (s *IntervalSource) Period() Timedelta { return Timedelta(s.period.Load()) }

func (s *IntervalSource) run(ctx context.Context) error {
	select {
	case <-s.attached:
	case <-ctx.Done():
		return nil
	}
	update := *s.update.Load()
	return runSchedule(ctx, s.clock, s.Period, func(ctx context.Context) error { return update(ctx, s) }, s.log)
}

// clock is wall-clock time, as in the reference, so tests can replace it.
type clock interface {
	Now() Timestamp
	// Sleep waits d, returning early with ctx's error when ctx ends.
	Sleep(ctx context.Context, d Timedelta) error
}

type wallClock struct{}

func (wallClock) Now() Timestamp { return Now() }

func (wallClock) Sleep(ctx context.Context, d Timedelta) error {
	t := time.NewTimer(d.Duration())
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runSchedule is the IntervalSource loop. It returns nil when ctx ends.
func runSchedule(ctx context.Context, clk clock, period func() Timedelta, update func(context.Context) error, log *slog.Logger) error {
	deadline := clk.Now()
	for {
		err := update(ctx)
		if ctx.Err() != nil {
			// The source stops (the update may have stopped it, which
			// takes a flush): no next round, and no deadline to miss.
			return nil
		}
		if err != nil {
			if !errors.Is(err, ErrPublish) {
				return fmt.Errorf("update: %w", err)
			}
			log.Debug("update could not publish; points stay buffered", "error", err)
		}
		p := period()
		if p <= 0 {
			return fmt.Errorf("%w: IntervalSource period not set before the first update finished", ErrInvalid)
		}
		deadline = deadline.Add(p)
		now := clk.Now()
		if now >= deadline {
			missed := int64(now.Sub(deadline)/p) + 1
			log.Warn("missed deadlines, skipping them", "count", missed, "deadline", deadline.String(), "now", now.String())
			deadline = deadline.Add(Timedelta(missed) * p)
		}
		if clk.Sleep(ctx, deadline.Sub(now)) != nil {
			return nil
		}
	}
}
