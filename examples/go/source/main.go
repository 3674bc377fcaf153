// Command source is a plain MetricQ Source: it declares a metric, sends a
// sine wave in chunks of 100 points and stops after a while.
//
//	go run ./examples/go/source -url amqp://guest:guest@127.0.0.1/ -duration 10s
package main

import (
	"context"
	"flag"
	"log"
	"math"
	"os"
	"os/signal"
	"time"

	"github.com/libmetricq/libmetricq/libmetricq"
)

func main() {
	url := flag.String("url", envOr("METRICQ_URL", "amqp://guest:guest@127.0.0.1:5672/"), "MetricQ management URL")
	token := flag.String("token", "source-go-example", "client token")
	rate := flag.Float64("rate", 1000, "points per second")
	duration := flag.Duration("duration", 10*time.Second, "how long to send")
	flag.Parse()

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()

	src, err := libmetricq.NewSource(*url, *token, libmetricq.WithChunkSize(100))
	if err != nil {
		log.Fatal(err)
	}
	if err := src.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := src.Stop(stopCtx); err != nil { // flushes the last chunk
			log.Print(err)
		}
	}()

	interval := libmetricq.TimedeltaFromSeconds(1 / *rate)
	err = src.DeclareMetrics(ctx, map[string]libmetricq.Metadata{
		"example.go.sine": {"unit": "", "rate": *rate, "interval": interval.PreciseString(),
			"description": "a 0.2 Hz sine wave", "scope": "point"},
	})
	if err != nil {
		log.Fatal(err)
	}

	ticker := time.NewTicker(interval.Duration())
	defer ticker.Stop()
	end := time.After(*duration)
	for {
		select {
		case <-ctx.Done():
			return
		case <-end:
			st := src.Stats()
			log.Printf("sent %d points in %d chunks", st.PointsAccepted, st.ChunksPublished)
			return
		case now := <-ticker.C:
			t := libmetricq.TimestampFromTime(now)
			value := math.Sin(2 * math.Pi * 0.2 * t.PosixSeconds())
			if err := src.Send(ctx, "example.go.sine", t, value); err != nil {
				log.Print(err)
				return
			}
		}
	}
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
