// Command source is a plain MetricQ Source: it declares a metric, sends a
// sine wave in chunks of 100 points and stops after a while, or on SIGINT
// or SIGTERM.
//
//	go run ./examples/go/source -url amqp://guest:guest@127.0.0.1/ -duration 10s
//
// When $METRICQ_DEMO_REPORT names a file, it writes "<metric> <points sent>"
// there at the end (scripts/demo.sh compares that with what arrived).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/libmetricq/libmetricq/libmetricq"
)

const metric = "example.go.sine"

func main() {
	url := flag.String("url", envOr("METRICQ_URL", "amqp://guest:guest@127.0.0.1:5672/"), "MetricQ management URL")
	token := flag.String("token", "source-go-example", "client token")
	rate := flag.Float64("rate", 1000, "points per second")
	duration := flag.Duration("duration", 10*time.Second, "how long to send (0: until SIGINT/SIGTERM)")
	flag.Parse()

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	src, err := libmetricq.NewSource(*url, *token, libmetricq.WithChunkSize(100))
	if err != nil {
		log.Fatal(err)
	}
	if err := src.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	err = send(ctx, src, *rate, *duration)
	stopCtx, cancelStop := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelStop()
	stopErr := src.Stop(stopCtx) // flushes the last chunk
	if err == nil {
		err = stopErr
	}
	st := src.Stats()
	log.Printf("sent %d points in %d chunks", st.PointsAccepted, st.ChunksPublished)
	if err := writeReport(map[string]uint64{metric: st.PointsAccepted}); err != nil {
		log.Print(err)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// send declares the metric and sends the sine until ctx ends or duration
// passes (0: no limit).
func send(ctx context.Context, src *libmetricq.Source, rate float64, duration time.Duration) error {
	interval := libmetricq.TimedeltaFromSeconds(1 / rate)
	err := src.DeclareMetrics(ctx, map[string]libmetricq.Metadata{
		metric: {"unit": "", "rate": rate, "interval": interval.PreciseString(),
			"description": "a 0.2 Hz sine wave", "scope": "point"},
	})
	if err != nil {
		return err
	}
	// A handle sends without looking the metric up by name every time.
	sine, err := src.Metric(metric)
	if err != nil {
		return err
	}

	ticker := time.NewTicker(interval.Duration())
	defer ticker.Stop()
	var end <-chan time.Time
	if duration > 0 {
		end = time.After(duration)
	}
	var last libmetricq.Timestamp
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-end:
			return nil
		case now := <-ticker.C:
			t := libmetricq.TimestampFromTime(now)
			if t <= last {
				// Timestamps must increase strictly, but the wall clock
				// may step back a little (NTP).
				t = last + 1
			}
			last = t
			value := math.Sin(2 * math.Pi * 0.2 * t.PosixSeconds())
			if err := sine.Send(ctx, t, value); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
	}
}

// writeReport writes "<metric> <points sent>" lines to $METRICQ_DEMO_REPORT,
// if set.
func writeReport(sent map[string]uint64) error {
	path := os.Getenv("METRICQ_DEMO_REPORT")
	if path == "" {
		return nil
	}
	var report []byte
	for metric, n := range sent {
		report = fmt.Appendf(report, "%s %d\n", metric, n)
	}
	return os.WriteFile(path, report, 0o644)
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
