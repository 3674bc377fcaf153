// Command bench is libmetricq's benchmark driver (make bench; see
// BENCHMARKS.md for what it measures and bench/NOTES.md for the profiling
// notes).
//
// It needs a broker URL with a vhost of its own (METRICQ_TEST_URL, as
// scripts/with-vhost.sh sets it), the C library in build/lib, the C driver
// build/bench/mqbench and the virtualenv .venv (make bench builds and
// starts all of these). It starts a local manager and a sink (a raw AMQP
// consumer on metricq.data) in-process, then runs every scenario: first
// once to warm up and size it (points for about BENCH_SECONDS seconds),
// then BENCH_RUNS rounds over all scenarios, interleaved so that a noisy
// moment hits every scenario alike. Every figure is the median of the
// rounds, with min and max; every ratio is taken between figures of the
// same invocation. Output: BENCHMARKS.md, bench/throughput.png and
// bench/scaling.png (gnuplot, beside it),
// the raw samples in build/bench/results.json.
//
// Settings (environment):
//
//	BENCH_RUNS     rounds per scenario (default 5)
//	BENCH_SECONDS  target duration of one throughput run (default 1.5)
//	BENCH_ONLY     regexp: run only the matching scenarios (the report then
//	               lacks the others' figures)
//	BENCH_GO       0: skip the go test benchmarks
//	BENCH_PERF     0: skip perf on the C send path (default: when perf runs)
//	BENCH_OUT      the report (default BENCHMARKS.md at the repo root)
//	BENCH_CHART    the chart (default bench/throughput.png)
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/libmetricq/libmetricq/internal/manager"
)

type config struct {
	root    string // repository root
	url     string
	runs    int
	seconds float64
	only    *regexp.Regexp
	goBench bool
	perf    bool
	out     string
	chart   string
	build   string // build/bench
	python  string
}

// sample is one run's figures, by name ("rate" is points/s end to end).
type sample map[string]float64

type scenario struct {
	name  string // also the metric prefix: bench.<name>.<round>
	title string
	// lang: "raw", "c", "py", "ref", "go" ("c-handle" too in the scaling
	// section): colours the chart, picks the scaling producer.
	lang string
	// Throughput scenarios are sized by a warm-up run: n0 points, then
	// enough for cfg.seconds, a multiple of unit, at most maxN.
	n0, unit, maxN int
	run            func(ctx context.Context, b *bench, id string, n int) (sample, error)

	// noWarmup: the scenario is measured from its first run (its runs are
	// long, and what it times is set up anew every run).
	noWarmup bool
	// maxRuns, when set, caps the rounds the scenario runs in (its runs
	// are long).
	maxRuns int

	n       int
	samples []sample
	errs    []string
}

func (s *scenario) throughput() bool { return s.n0 > 0 }

type bench struct {
	cfg       config
	sink      *sink
	mgr       *manager.Manager
	scenarios []*scenario
	goBench   []goBenchLine
	goProfile string // pprof -top text
	perf      []perfResult
	started   time.Time
	machine   machineInfo
}

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("bench: ")
	if len(os.Args) > 1 && os.Args[1] == goScaleMode {
		goScaleProducer(os.Args[2:])
		return
	}
	cfg, err := loadConfig()
	if err != nil {
		log.Fatal(err)
	}
	b := &bench{cfg: cfg, started: time.Now()}
	if err := b.main(); err != nil {
		log.Fatal(err)
	}
}

func loadConfig() (config, error) {
	root, err := repoRoot()
	if err != nil {
		return config{}, err
	}
	c := config{root: root, runs: 5, seconds: 1.5, goBench: true, perf: true}
	c.url = os.Getenv("METRICQ_TEST_URL")
	if c.url == "" {
		return c, errors.New("METRICQ_TEST_URL is not set: run through scripts/with-vhost.sh (make bench does)")
	}
	if v := os.Getenv("BENCH_RUNS"); v != "" {
		if c.runs, err = strconv.Atoi(v); err != nil || c.runs < 1 {
			return c, fmt.Errorf("BENCH_RUNS=%q: want a positive integer", v)
		}
	}
	if v := os.Getenv("BENCH_SECONDS"); v != "" {
		if c.seconds, err = strconv.ParseFloat(v, 64); err != nil || !(c.seconds > 0) {
			return c, fmt.Errorf("BENCH_SECONDS=%q: want seconds > 0", v)
		}
	}
	if v := os.Getenv("BENCH_ONLY"); v != "" {
		if c.only, err = regexp.Compile(v); err != nil {
			return c, fmt.Errorf("BENCH_ONLY: %w", err)
		}
	}
	c.goBench = os.Getenv("BENCH_GO") != "0"
	c.perf = os.Getenv("BENCH_PERF") != "0"
	c.out = envOr("BENCH_OUT", filepath.Join(root, "BENCHMARKS.md"))
	c.chart = envOr("BENCH_CHART", filepath.Join(root, "bench", "throughput.png"))
	c.build = filepath.Join(root, "build", "bench")
	c.python = envOr("METRICQ_PYTHON", filepath.Join(root, ".venv", "bin", "python"))
	return c, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// repoRoot is the directory holding go.mod, from the working directory up.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "bench")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the libmetricq repository")
		}
		dir = parent
	}
}

func (b *bench) main() error {
	if err := os.MkdirAll(b.cfg.build, 0o755); err != nil {
		return err
	}
	for _, p := range []string{filepath.Join(b.cfg.build, "mqbench"), filepath.Join(b.cfg.root, "build", "lib", "libmetricq.so"), b.cfg.python} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s is missing: run make bench (it builds and installs what the driver needs)", p)
		}
	}
	// Tests that restart the broker take this lock exclusively: holding it
	// shared keeps them from doing so in the middle of a run.
	if unlock, err := sharedBrokerLock(); err == nil {
		defer unlock()
	} else {
		log.Printf("broker lock: %v (carrying on)", err)
	}
	if err := b.stagePythonPackage(); err != nil {
		return err
	}
	b.machine = readMachine(b.cfg)
	b.scenarios = scenarios(b.cfg)

	if b.cfg.goBench && b.selected("go-") {
		if err := b.runGoBenchmarks(); err != nil {
			log.Printf("go benchmarks: %v", err)
		}
	}

	ctx := context.Background()
	if err := b.restartManager(ctx); err != nil {
		return err
	}
	defer func() {
		if b.mgr != nil {
			b.mgr.Close()
		}
	}()
	var err error
	if b.sink, err = newSink(b.cfg.url); err != nil {
		return err
	}
	defer b.sink.close()

	var active []*scenario
	for _, s := range b.scenarios {
		if b.selected(s.name) {
			active = append(active, s)
		}
	}
	// Warm-up and sizing.
	for _, s := range active {
		if s.noWarmup {
			continue
		}
		n := s.n0
		if !s.throughput() {
			n = 0
		}
		smp, err := b.runOne(ctx, s, "w", n)
		if err != nil {
			log.Printf("%-18s warm-up failed: %v", s.name, err)
			s.errs = append(s.errs, "warm-up: "+err.Error())
			continue
		}
		if s.throughput() {
			s.n = sizeRun(s, smp["rate"], b.cfg.seconds)
			log.Printf("%-18s warm-up %s -> %d points per run", s.name, fmtRate(smp["rate"]), s.n)
		} else {
			log.Printf("%-18s warm-up done", s.name)
		}
	}
	for round := 1; round <= b.cfg.runs; round++ {
		for _, s := range active {
			if len(s.errs) > 0 && len(s.samples) == 0 && strings.HasPrefix(s.errs[0], "warm-up") {
				continue
			}
			if s.maxRuns > 0 && round > s.maxRuns {
				continue
			}
			smp, err := b.runOne(ctx, s, "r"+strconv.Itoa(round), s.n)
			if err != nil {
				log.Printf("%-18s round %d failed: %v", s.name, round, err)
				s.errs = append(s.errs, fmt.Sprintf("round %d: %v", round, err))
				continue
			}
			s.samples = append(s.samples, smp)
			log.Printf("%-18s round %d: %s", s.name, round, smp.brief())
		}
	}
	if b.cfg.perf {
		if err := b.runPerf(ctx); err != nil {
			log.Printf("perf: %v", err)
		}
	}
	return b.report()
}

// restartManager starts the local manager, closing the one running: a
// manager that has stored every metric of the runs before is not what a
// source declaring its metrics meets.
func (b *bench) restartManager(ctx context.Context) error {
	if b.mgr != nil {
		b.mgr.Close()
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var err error
	b.mgr, err = manager.Start(ctx, manager.Config{URL: b.cfg.url, Logger: slog.New(slog.DiscardHandler)})
	return err
}

func (b *bench) selected(name string) bool {
	return b.cfg.only == nil || b.cfg.only.MatchString(name)
}

func (b *bench) runOne(ctx context.Context, s *scenario, round string, n int) (sample, error) {
	id := s.name + "." + round
	var cancel context.CancelFunc
	ctx, cancel = context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	return s.run(ctx, b, id, n)
}

// sizeRun gives the points for a run of about seconds at rate.
func sizeRun(s *scenario, rate, seconds float64) int {
	n := int(rate * seconds)
	n = max(n, s.n0/2)
	if s.maxN > 0 {
		n = min(n, s.maxN)
	}
	if s.unit > 1 {
		n = max(s.unit, n/s.unit*s.unit)
	}
	return n
}

func (smp sample) brief() string {
	var parts []string
	for _, k := range sortedKeys(smp) {
		v := smp[k]
		switch {
		case strings.HasSuffix(k, "rate"):
			parts = append(parts, k+"="+fmtRate(v))
		default:
			parts = append(parts, fmt.Sprintf("%s=%.4g", k, v))
		}
	}
	return strings.Join(parts, " ")
}

// token is a client token unique to this run.
func token(id string) string {
	var r [3]byte
	_, _ = rand.Read(r[:])
	return "bench-" + strings.ReplaceAll(id, ".", "-") + "-" + hex.EncodeToString(r[:])
}

// produce runs a producer and measures end to end: from the producer's
// start_ns to the sink's receipt of the last of n points on bench.<id>.*.
func (b *bench) produce(ctx context.Context, id string, n int, latency bool, run func(ctx context.Context, prefix string) (map[string]any, error)) (sample, *watch, error) {
	prefix := "bench." + id
	w := b.sink.expect(prefix+".", int64(n), latency)
	out, err := run(ctx, prefix)
	if err != nil {
		b.sink.remove(w)
		return nil, nil, err
	}
	if msg, ok := out["error"].(string); ok && out["start_ns"] == nil {
		b.sink.remove(w)
		return nil, nil, errors.New(msg)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := b.sink.wait(wctx, w); err != nil {
		return nil, nil, err
	}
	start := num(out, "start_ns")
	if start <= 0 {
		return nil, nil, fmt.Errorf("producer output lacks start_ns: %v", out)
	}
	smp := sample{"e2e_s": float64(w.lastNs-int64(start)) / 1e9}
	smp["rate"] = float64(n) / smp["e2e_s"]
	if sent := num(out, "sent_ns"); sent > 0 {
		smp["send_rate"] = float64(n) / ((sent - start) / 1e9)
	}
	if cpu := num(out, "cpu_ns_per_point"); cpu > 0 {
		smp["send_cpu_ns"] = cpu
	}
	return smp, w, nil
}

func num(m map[string]any, key string) float64 {
	switch v := m[key].(type) {
	case float64:
		return v
	case json.Number:
		f, _ := v.Float64()
		return f
	}
	return 0
}

// runJSON runs a command and decodes the JSON object it prints last.
func runJSON(ctx context.Context, env []string, name string, args ...string) (map[string]any, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %v: %s", filepath.Base(name), args[0], err, lastLines(stderr.String(), 5))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var out map[string]any
	dec := json.NewDecoder(strings.NewReader(lines[len(lines)-1]))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("%s %s: output %q: %v (stderr: %s)", filepath.Base(name), args[0], stdout.String(), err, lastLines(stderr.String(), 5))
	}
	return out, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func (b *bench) mqbench(ctx context.Context, args ...string) (map[string]any, error) {
	return runJSON(ctx, []string{"METRICQ_LOG=warn"}, filepath.Join(b.cfg.build, "mqbench"), args...)
}

// stagePythonPackage copies the binding's Python files (bindings/python/
// libmetricq, without a bundled _lib/ copy of the C library, which the
// package would load first and which may be older than build/lib) to
// build/bench/py, so that the Python scenarios run the library just built.
func (b *bench) stagePythonPackage() error {
	src := filepath.Join(b.cfg.root, "bindings", "python", "libmetricq")
	dst := filepath.Join(b.cfg.build, "py", "libmetricq")
	if err := os.RemoveAll(filepath.Dir(dst)); err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(src, "*.py"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no Python binding in %s", src)
	}
	// The C extension, as make python built it in place.
	extensions, _ := filepath.Glob(filepath.Join(src, "_fastsend*.so"))
	files = append(files, extensions...)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(f)), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) pybench(ctx context.Context, args ...string) (map[string]any, error) {
	env := []string{
		"PYTHONPATH=" + filepath.Join(b.cfg.build, "py"),
		"LIBMETRICQ_PATH=" + filepath.Join(b.cfg.root, "build", "lib"),
		"METRICQ_LOG=warn",
	}
	return runJSON(ctx, env, b.cfg.python, append([]string{filepath.Join(b.cfg.root, "bench", "python", "pybench.py")}, args...)...)
}

func itoa(n int) string { return strconv.Itoa(n) }

// scenarios lists everything the driver runs, in report order.
func scenarios(cfg config) []*scenario {
	raw := func(name, title string, chunk int, confirm bool) *scenario {
		return &scenario{name: name, title: title, lang: "raw", n0: 100 * chunk, unit: chunk, maxN: 100_000_000,
			run: func(ctx context.Context, b *bench, id string, n int) (sample, error) {
				bodies := rawBodies(chunk)
				smp, _, err := b.produce(ctx, id, n, false, func(ctx context.Context, prefix string) (map[string]any, error) {
					start, end, err := rawPublish(ctx, b.cfg.url, prefix+".0", bodies, n/chunk, confirm)
					if err != nil {
						return nil, err
					}
					return map[string]any{"start_ns": float64(start), "sent_ns": float64(end)}, nil
				})
				return smp, err
			}}
	}
	cSend := func(name, title string, threads int, extra ...string) *scenario {
		return &scenario{name: name, title: title, lang: "c", n0: 500_000, unit: 1000 * threads, maxN: 100_000_000,
			run: func(ctx context.Context, b *bench, id string, n int) (sample, error) {
				smp, _, err := b.produce(ctx, id, n, false, func(ctx context.Context, prefix string) (map[string]any, error) {
					return b.mqbench(ctx, append([]string{"send", b.cfg.url, token(id), prefix, itoa(threads), itoa(n), "1000"}, extra...)...)
				})
				return smp, err
			}}
	}
	py := func(name, title, lang, mode string, n0, chunk int, extra ...string) *scenario {
		return &scenario{name: name, title: title, lang: lang, n0: n0, unit: chunk, maxN: 100_000_000,
			run: func(ctx context.Context, b *bench, id string, n int) (sample, error) {
				var shipped string
				smp, _, err := b.produce(ctx, id, n, false, func(ctx context.Context, prefix string) (map[string]any, error) {
					out, err := b.pybench(ctx, append([]string{mode, b.cfg.url, token(id), prefix, itoa(n), itoa(chunk)}, extra...)...)
					if err == nil {
						shipped, _ = out["error"].(string)
						libraryUsed[name], _ = out["library"].(string)
						if fast, ok := out["fast_send"].(bool); ok && !fast && !slices.Contains(extra, "ctypes") {
							err = fmt.Errorf("%s: the binding's C extension libmetricq._fastsend is missing: run make python", name)
						}
					}
					return out, err
				})
				if lib := libraryUsed[name]; lib != "" && !strings.HasPrefix(lib, filepath.Join(b.cfg.root, "build", "lib")) {
					log.Printf("%s: the binding loaded %s, not build/lib", name, lib)
				}
				if err == nil && shipped != "" {
					smp["shipped_fails"] = 1
					shippedErrors[name] = shipped
				}
				return smp, err
			}}
	}
	return append([]*scenario{
		raw("raw-noconfirm-1k", "amqp091-go, 1000-point chunks, no confirms", 1000, false),
		raw("raw-confirm-1k", "amqp091-go, 1000-point chunks, confirms", 1000, true),
		raw("raw-noconfirm-10k", "amqp091-go, 10000-point chunks, no confirms", 10000, false),
		raw("raw-confirm-10k", "amqp091-go, 10000-point chunks, confirms", 10000, true),
		cSend("c-send-1k", "C mq_source_send, 1 thread, chunk 1000", 1),
		cSend("c-send-1k-4t", "C mq_source_send, 4 threads x 4 metrics, chunk 1000", 4),
		cSend("c-metric-send-1k", "C mq_metric_send (metric handle), 1 thread, chunk 1000", 1, "handle"),
		{name: "c-batch-10k", title: "C mq_source_send_batch, 10000 points, chunk 10000", lang: "c", n0: 2_000_000, unit: 10000, maxN: 200_000_000,
			run: func(ctx context.Context, b *bench, id string, n int) (sample, error) {
				smp, _, err := b.produce(ctx, id, n, false, func(ctx context.Context, prefix string) (map[string]any, error) {
					return b.mqbench(ctx, "batch", b.cfg.url, token(id), prefix, itoa(n), "10000", "10000")
				})
				return smp, err
			}},
		py("py-batch-10k", "Python libmetricq send_batch (numpy), 10000 points, chunk 10000", "py", "ours-batch", 2_000_000, 10000, "10000"),
		py("py-send-1k", "Python libmetricq send, chunk 1000", "py", "ours-send", 100_000, 1000),
		py("py-metric-send-1k", "Python libmetricq metric(name).send (metric handle), chunk 1000", "py", "ours-send", 100_000, 1000, "handle"),
		py("py-send-1k-ctypes", "Python libmetricq send without its C extension (ctypes), chunk 1000", "py", "ours-send", 100_000, 1000, "ctypes"),
		py("ref-async-1k", "reference metricq.Source.send (async), chunk 1000", "ref", "ref-async", 20_000, 1000),
		py("ref-sync-1k", "reference metricq.SynchronousSource.send, chunk 1000", "ref", "ref-sync", 5_000, 1000),
		latency("latency-raw", "amqp091-go, 1-point chunks, 2000/s, no confirms: publish to sink receipt (the floor)", "raw",
			func(ctx context.Context, b *bench, id, prefix string, rate, seconds int) (map[string]any, error) {
				start, end, err := rawPaced(ctx, b.cfg.url, prefix+".0", rate, seconds)
				return map[string]any{"start_ns": float64(start), "sent_ns": float64(end)}, err
			}),
		latency("latency-c1", "C mq_source_send, chunk 1, 2000 points/s: send to sink receipt", "c",
			func(ctx context.Context, b *bench, id, prefix string, rate, seconds int) (map[string]any, error) {
				return b.mqbench(ctx, "latency", b.cfg.url, token(id), prefix, itoa(rate), itoa(seconds))
			}),
		{name: "startup", title: "C mq_source_new to ready (10 in a row)", lang: "c",
			run: func(ctx context.Context, b *bench, id string, _ int) (sample, error) {
				out, err := b.mqbench(ctx, "startup", b.cfg.url, token(id), "10")
				if err != nil {
					return nil, err
				}
				raw, _ := out["new_ns"].([]any)
				var ns []int64
				for _, v := range raw {
					if f, ok := v.(json.Number); ok {
						x, _ := f.Int64()
						ns = append(ns, x)
					}
				}
				if len(ns) == 0 {
					return nil, fmt.Errorf("no startup times: %v", out)
				}
				return sample{"median_ms": percentile(ns, 50) / 1e6, "first_ms": float64(ns[0]) / 1e6, "max_ms": percentile(ns, 100) / 1e6}, nil
			}},
		rssScenario("rss-1m", "C host, one source, after 1M points (default buffer bound)", 0),
		rssScenario("rss-1m-bound64k", "C host, one source, after 1M points, max_buffered 65536", 65536),
	}, scaleScenarios()...)
}

// latency runs a producer of 1-point chunks at 2000 points/s for 3 s; the
// sink records receipt time minus each point's timestamp.
func latency(name, title, lang string, run func(ctx context.Context, b *bench, id, prefix string, rate, seconds int) (map[string]any, error)) *scenario {
	return &scenario{name: name, title: title, lang: lang,
		run: func(ctx context.Context, b *bench, id string, _ int) (sample, error) {
			const rate, seconds = 2000, 3
			_, w, err := b.produce(ctx, id, rate*seconds, true, func(ctx context.Context, prefix string) (map[string]any, error) {
				return run(ctx, b, id, prefix, rate, seconds)
			})
			if err != nil {
				return nil, err
			}
			return sample{
				"p50_us": percentile(w.lat, 50) / 1e3,
				"p99_us": percentile(w.lat, 99) / 1e3,
				"max_us": percentile(w.lat, 100) / 1e3,
			}, nil
		}}
}

func rssScenario(name, title string, maxBuffered int) *scenario {
	return &scenario{name: name, title: title, lang: "c",
		run: func(ctx context.Context, b *bench, id string, _ int) (sample, error) {
			const points = 1_000_000
			var out map[string]any
			_, _, err := b.produce(ctx, id, points, false, func(ctx context.Context, prefix string) (map[string]any, error) {
				var err error
				out, err = b.mqbench(ctx, "rss", b.cfg.url, token(id), prefix, itoa(points), itoa(maxBuffered))
				return out, err
			})
			if err != nil {
				return nil, err
			}
			return sample{
				"vmhwm_mb":          num(out, "vmhwm_kb") / 1024,
				"vmrss_mb":          num(out, "vmrss_kb") / 1024,
				"rss_connected_mb":  num(out, "rss_connected_kb") / 1024,
				"max_buffered_seen": num(out, "max_buffered_seen"),
				"max_buffered":      num(out, "max_buffered"),
			}, nil
		}}
}

// shippedErrors holds, per scenario, the error the reference gave as
// shipped (ref-sync: PROTOCOL §8).
var shippedErrors = map[string]string{}

// libraryUsed is, per Python scenario of ours, the library file the binding
// loaded (it prefers a copy bundled into the package over LIBMETRICQ_PATH).
var libraryUsed = map[string]string{}

func percentile(xs []int64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]int64(nil), xs...)
	sortInt64(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	i = min(max(i, 0), len(s)-1)
	return float64(s[i])
}

// sharedBrokerLock takes the lock libmetricq's tests and scripts/broker.sh
// use before restarting the broker ($TMPDIR/libmetricq-broker.lock).
func sharedBrokerLock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "libmetricq-broker.lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
