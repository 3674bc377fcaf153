// Command metricq-manager runs a local MetricQ manager for development and
// tests (needs only RabbitMQ), and tails or watches metrics through it.
//
//	metricq-manager [flags] [URL]
//	metricq-manager tail [-token T] [-n COUNT] [-timeout D] [-json] [-http ADDR] URL METRIC...
//	metricq-manager watch [-duration D] [-http ADDR] [-summary FILE] [-reports DIR] URL [METRIC...]
//
// URL defaults to $METRICQ_URL, else amqp://guest:guest@127.0.0.1:5672/.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/libmetricq/libmetricq/internal/manager"
)

const defaultURL = "amqp://guest:guest@127.0.0.1:5672/"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "tail" {
		return runTail(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "watch" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return runWatch(ctx, args[1:], stdout, stderr)
	}
	return runManager(args, stderr)
}

func defaultBrokerURL() string {
	if u := os.Getenv("METRICQ_URL"); u != "" {
		return u
	}
	return defaultURL
}

func runManager(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("metricq-manager", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "JSON `file`: object token -> client configuration (tokens not in it get {})")
	metadataFile := fs.String("metadata", "", "JSON `file` persisting metric metadata (loaded at start, rewritten after declares and at exit)")
	dataAddress := fs.String("data-address", "", "dataServerAddress sent to clients (default \"vhost:<URL's vhost>\")")
	requireConfig := fs.Bool("require-config", false, "reply to register RPCs of tokens without a configuration with the manager's \"Document … was not found\" error")
	verbose := fs.Bool("v", false, "log debug messages")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage:
  metricq-manager [flags] [URL]
      run a local MetricQ manager until SIGINT/SIGTERM
  metricq-manager tail [-token T] [-n COUNT] [-timeout D] [-json] [-http ADDR] URL METRIC...
      subscribe through the manager and print the data points
  metricq-manager watch [-duration D] [-http ADDR] [-summary FILE] [-reports DIR] URL [METRIC...]
      subscribe through the manager and show per metric the count, rate and
      latest value, live; with -http also in the browser (see watch -h)

URL defaults to $METRICQ_URL, else %s

Flags:
`, defaultURL)
		fs.PrintDefaults()
	}
	if status, done := parseArgs(fs, args, stderr, func(n int) bool { return n <= 1 }, "metricq-manager: too many arguments"); done {
		return status
	}
	url := defaultBrokerURL()
	if fs.NArg() == 1 {
		url = fs.Arg(0)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	m, err := manager.Start(startCtx, manager.Config{
		URL:           url,
		DataAddress:   *dataAddress,
		ConfigFile:    *configFile,
		MetadataFile:  *metadataFile,
		RequireConfig: *requireConfig,
		Logger:        log,
	})
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "metricq-manager: %v\n", err)
		return 1
	}
	select {
	case <-ctx.Done():
		log.Info("stopping")
		if err := m.Close(); err != nil {
			fmt.Fprintf(stderr, "metricq-manager: close: %v\n", err)
			return 1
		}
		return 0
	case <-m.Done():
		m.Close()
		fmt.Fprintf(stderr, "metricq-manager: %v\n", m.Err())
		return 1
	}
}

func runTail(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("metricq-manager tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	token := fs.String("token", "", "sink token (default sink-metricq-tail.<random hex>)")
	count := fs.Int("n", 0, "exit after COUNT points (0: run until interrupted)")
	timeout := fs.Duration("timeout", 0, "give up after this long (0: no limit); with -n, not reaching COUNT in time is an error")
	asJSON := fs.Bool("json", false, `print one JSON object per point: {"metric":…,"time":<ns>,"value":…}`)
	httpAddr := fs.String("http", "", "also serve the browser view of watch on `[HOST]:PORT` (host defaults to 127.0.0.1)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: metricq-manager tail [-token T] [-n COUNT] [-timeout D] [-json] [-http ADDR] URL METRIC...\n"+
			"Subscribes through the MetricQ manager (one must run) and prints each point as\n"+
			"  <metric> <RFC3339Nano time> <value>\n"+
			"METRIC is an AMQP topic binding key: \"#\" is everything.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if status, done := parseArgs(fs, args, stderr, func(n int) bool { return n >= 2 }, "metricq-manager tail: need URL and at least one METRIC"); done {
		return status
	}
	if *count < 0 {
		fmt.Fprintln(stderr, "metricq-manager tail: -n must not be negative")
		return 2
	}
	if *httpAddr != "" {
		if _, err := listenAddress(*httpAddr); err != nil {
			fmt.Fprintf(stderr, "metricq-manager tail: %v\n", err)
			return 2
		}
	}
	url, metrics := fs.Arg(0), fs.Args()[1:]
	if *token == "" {
		*token = randomToken("sink-metricq-tail.")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sub, err := manager.SubscribeWith(ctx, url, *token, metrics, manager.SubscribeOptions{Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "metricq-manager tail: %v\n", err)
		return 1
	}
	defer sub.Close()
	var mon *monitor
	if *httpAddr != "" {
		if mon, err = startMonitor(url, *token, metrics, *httpAddr, "metricq-manager tail", log, stderr); err != nil {
			fmt.Fprintf(stderr, "metricq-manager tail: %v\n", err)
			return 1
		}
		defer mon.close()
		fmt.Fprintf(stderr, "metricq-manager tail: live view at %s\n", mon.web.URL())
	}

	seen := 0
	enc := json.NewEncoder(stdout)
	for {
		select {
		case chunk, ok := <-sub.Chunks():
			if !ok {
				fmt.Fprintf(stderr, "metricq-manager tail: %v\n", sub.Err())
				return 1
			}
			if mon != nil {
				mon.add(chunk.Metric, chunk.Points)
			}
			for _, p := range chunk.Points {
				if *asJSON {
					err = enc.Encode(jsonPoint{Metric: chunk.Metric, Time: int64(p.Time), Value: jsonFloat(p.Value)})
				} else {
					_, err = fmt.Fprintf(stdout, "%s %s %s\n", chunk.Metric, p.Time.String(), strconv.FormatFloat(p.Value, 'g', -1, 64))
				}
				if err != nil {
					fmt.Fprintf(stderr, "metricq-manager tail: %v\n", err)
					return 1
				}
				seen++
				if *count > 0 && seen >= *count {
					return 0
				}
			}
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) && *count > 0 {
				fmt.Fprintf(stderr, "metricq-manager tail: timeout after %d of %d points\n", seen, *count)
				return 1
			}
			return 0
		}
	}
}

type jsonPoint struct {
	Metric string    `json:"metric"`
	Time   int64     `json:"time"`
	Value  jsonFloat `json:"value"`
}

// jsonFloat writes NaN and ±Inf, which JSON cannot hold, as null.
type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(v)
}

// parseArgs parses a command's flags and checks its argument count. done
// says the command ends here, with status: 0 after -h, 2 for a usage error.
func parseArgs(fs *flag.FlagSet, args []string, stderr io.Writer, countOK func(int) bool, complaint string) (status int, done bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	if !countOK(fs.NArg()) {
		fmt.Fprintln(stderr, complaint)
		fs.Usage()
		return 2, true
	}
	return 0, false
}
