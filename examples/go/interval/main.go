// Command interval is a MetricQ IntervalSource: every period it reads this
// machine's load average and free memory from /proc and sends them, with a
// 0.1 Hz sine. The period comes from the manager's configuration ("rate" in
// Hz), 1 s if unset. SIGINT or SIGTERM stop it.
//
//	go run ./examples/go/interval -url amqp://guest:guest@127.0.0.1/
//
// When $METRICQ_DEMO_REPORT names a file, it writes "<metric> <points sent>"
// lines there at the end (scripts/demo.sh compares them with what arrived).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/libmetricq/libmetricq/libmetricq"
)

func main() {
	url := flag.String("url", envOr("METRICQ_URL", "amqp://guest:guest@127.0.0.1:5672/"), "MetricQ management URL")
	token := flag.String("token", "source-go-sysinfo", "client token")
	prefix := flag.String("prefix", "example.go.sysinfo", "metric name prefix")
	flag.Parse()

	load, memory, sine := *prefix+".load1", *prefix+".mem_available", *prefix+".sine"
	var (
		src    *libmetricq.IntervalSource
		sentMu sync.Mutex
		sent   = map[string]uint64{}
	)
	update := func(ctx context.Context, s *libmetricq.IntervalSource) error {
		now := libmetricq.Now()
		l, err := readLoad()
		if err != nil {
			return err
		}
		m, err := readMemAvailable()
		if err != nil {
			return err
		}
		values := map[string]float64{load: l, memory: m, sine: math.Sin(2 * math.Pi * 0.1 * now.PosixSeconds())}
		for metric, v := range values {
			if err := s.Send(ctx, metric, now, v); err != nil {
				return err
			}
			sentMu.Lock()
			sent[metric]++
			sentMu.Unlock()
		}
		return nil
	}
	onConfig := func(ctx context.Context, s *libmetricq.Source, config map[string]any) error {
		rate := 1.0
		if r, ok := config["rate"]; ok {
			parsed, err := strconv.ParseFloat(fmt.Sprint(r), 64)
			if err != nil || parsed <= 0 {
				return fmt.Errorf("config rate %v: want a positive number", r)
			}
			rate = parsed
		}
		period := libmetricq.TimedeltaFromSeconds(1 / rate)
		if err := src.SetPeriod(period); err != nil {
			return err
		}
		return s.DeclareMetrics(ctx, map[string]libmetricq.Metadata{
			load:   {"unit": "", "rate": rate, "interval": period.PreciseString(), "description": "1-minute load average", "scope": "last"},
			memory: {"unit": "B", "rate": rate, "interval": period.PreciseString(), "description": "available memory", "scope": "point"},
			sine:   {"unit": "", "rate": rate, "interval": period.PreciseString(), "description": "a 0.1 Hz sine wave", "scope": "point"},
		})
	}
	var err error
	src, err = libmetricq.NewIntervalSource(*url, *token, update, libmetricq.WithConfigHandler(onConfig))
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	err = src.Run(ctx) // on SIGINT/SIGTERM: stops, publishing what is buffered
	sentMu.Lock()
	if rerr := writeReport(sent); rerr != nil {
		log.Print(rerr)
	}
	sentMu.Unlock()
	if err != nil {
		log.Fatal(err)
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

func readLoad() (float64, error) {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	return strconv.ParseFloat(strings.Fields(string(raw))[0], 64)
}

func readMemAvailable() (float64, error) {
	raw, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kib, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kib * 1024, err
		}
	}
	return 0, fmt.Errorf("no MemAvailable in /proc/meminfo")
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
