package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// --- statistics -------------------------------------------------------------------

type stat struct {
	med, min, max float64
	n             int
}

func (s stat) ok() bool { return s.n > 0 }

func statOf(xs []float64) stat {
	if len(xs) == 0 {
		return stat{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{med: m, min: s[0], max: s[len(s)-1], n: len(s)}
}

func (b *bench) scenario(name string) *scenario {
	for _, s := range b.scenarios {
		if s.name == name {
			return s
		}
	}
	return nil
}

func (b *bench) stat(name, key string) stat {
	s := b.scenario(name)
	if s == nil {
		return stat{}
	}
	var xs []float64
	for _, smp := range s.samples {
		if v, ok := smp[key]; ok && !math.IsNaN(v) {
			xs = append(xs, v)
		}
	}
	return statOf(xs)
}

func sortedKeys(m sample) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sortInt64(s []int64) { slices.Sort(s) }

func fmtRate(v float64) string {
	switch {
	case math.IsNaN(v):
		return "n/a"
	case v >= 1e6:
		return fmt.Sprintf("%.2f M/s", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1f k/s", v/1e3)
	}
	return fmt.Sprintf("%.0f /s", v)
}

// fmtStat prints median [min–max] with f.
func fmtStat(s stat, f func(float64) string) string {
	if !s.ok() {
		return "n/a"
	}
	if s.n == 1 || s.min == s.max {
		return f(s.med)
	}
	return fmt.Sprintf("%s [%s–%s]", f(s.med), f(s.min), f(s.max))
}

// fmtG prints 3 significant digits, but whole numbers from 100 on, never
// with an exponent.
func fmtG(unit string) func(float64) string {
	return func(v float64) string {
		if math.Abs(v) >= 100 {
			return strconv.FormatFloat(v, 'f', 0, 64) + unit
		}
		return strconv.FormatFloat(v, 'g', 3, 64) + unit
	}
}

// --- machine ------------------------------------------------------------------------

type machineInfo struct {
	CPU, Kernel, Go, RabbitMQ, Erlang, Python string
	Cores                                     int
	MemGB                                     float64
	Short                                     string
}

func readMachine(cfg config) machineInfo {
	m := machineInfo{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		fmt.Sscanf(strings.TrimPrefix(strings.SplitN(string(data), "\n", 2)[0], "MemTotal:"), "%f", &kb)
		m.MemGB = kb / 1024 / 1024
	}
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command(cfg.python, "--version").CombinedOutput(); err == nil {
		m.Python = strings.TrimSpace(string(out))
	}
	m.RabbitMQ, m.Erlang = brokerVersion(cfg.url)
	m.Short = fmt.Sprintf("%d cores", m.Cores)
	return m
}

// brokerVersion asks the management API (port 15672) of the broker.
func brokerVersion(amqpURL string) (rabbit, erlang string) {
	u, err := url.Parse(amqpURL)
	if err != nil {
		return "", ""
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+u.Hostname()+":15672/api/overview", nil)
	pw, _ := u.User.Password()
	req.SetBasicAuth(u.User.Username(), pw)
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return "", ""
	}
	defer resp.Body.Close()
	var o struct {
		RabbitMQ string `json:"rabbitmq_version"`
		Erlang   string `json:"erlang_version"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&o)
	return o.RabbitMQ, o.Erlang
}

// --- go test benchmarks --------------------------------------------------------------

type goBenchLine struct {
	Name                  string
	NsOp, BOp, AllocsOp   float64
	PointsPerSecond, Iter float64
}

var goBenchRE = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+(.*)$`)

func parseGoBench(out string) []goBenchLine {
	var lines []goBenchLine
	for _, l := range strings.Split(out, "\n") {
		m := goBenchRE.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil {
			continue
		}
		g := goBenchLine{Name: m[1]}
		g.Iter, _ = strconv.ParseFloat(m[2], 64)
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				g.NsOp = v
			case "B/op":
				g.BOp = v
			case "allocs/op":
				g.AllocsOp = v
			case "points/s":
				g.PointsPerSecond = v
			}
		}
		lines = append(lines, g)
	}
	return lines
}

func (b *bench) runGoBenchmarks() error {
	log.Printf("go test benchmarks (-benchmem, -count %d, CPU profile)", b.cfg.runs)
	bin := filepath.Join(b.cfg.build, "libmetricq.test")
	prof := filepath.Join(b.cfg.build, "go-send.cpu.pprof")
	cmd := exec.Command("go", "test", "./libmetricq", "-run", "^$", "-bench", "^BenchmarkSend",
		"-benchmem", "-benchtime", "1s", "-count", strconv.Itoa(b.cfg.runs),
		"-cpuprofile", prof, "-o", bin)
	cmd.Dir = b.cfg.root
	cmd.Env = append(os.Environ(), "METRICQ_TEST_URL="+b.cfg.url, "METRICQ_LOG=error")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	_ = os.WriteFile(filepath.Join(b.cfg.build, "go-bench.txt"), out.Bytes(), 0o644)
	if err != nil {
		return fmt.Errorf("%v: %s", err, lastLines(out.String(), 10))
	}
	b.goBench = parseGoBench(out.String())
	for _, g := range b.goBench {
		log.Printf("%-22s %8.1f ns/op %6.0f B/op %4.0f allocs/op %s", g.Name, g.NsOp, g.BOp, g.AllocsOp, fmtRate(g.PointsPerSecond))
	}
	top, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=25", bin, prof).Output()
	if err == nil {
		b.goProfile = string(top)
		_ = os.WriteFile(filepath.Join(b.cfg.build, "go-send.pprof.txt"), top, 0o644)
	}
	return nil
}

func (b *bench) goStat(name, field string) stat {
	var xs []float64
	for _, g := range b.goBench {
		if g.Name != name {
			continue
		}
		switch field {
		case "ns":
			xs = append(xs, g.NsOp)
		case "allocs":
			xs = append(xs, g.AllocsOp)
		case "bytes":
			xs = append(xs, g.BOp)
		case "rate":
			xs = append(xs, g.PointsPerSecond)
		}
	}
	return statOf(xs)
}

// --- perf on the C send path -----------------------------------------------------------

// perfTargets are the C scenarios profiled with perf: scenario, mqbench
// arguments after URL TOKEN PREFIX (%d: the points).
var perfTargets = []struct{ scenario, title, args string }{
	{"c-send-1k", "C `mq_source_send`, 1 thread, chunk 1000", "send 1 %d 1000"},
	{"c-batch-10k", "C `mq_source_send_batch`, 10000 points, chunk 10000", "batch %d 10000 10000"},
}

func (b *bench) runPerf(ctx context.Context) error {
	if _, err := exec.LookPath("perf"); err != nil {
		return fmt.Errorf("perf not installed: skipped")
	}
	for _, t := range perfTargets {
		s := b.scenario(t.scenario)
		if s == nil || !b.selected(s.name) || s.n == 0 {
			continue
		}
		text, err := b.perfOne(ctx, s, t.args)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		b.perf = append(b.perf, perfResult{title: t.title, text: text})
	}
	return nil
}

type perfResult struct{ title, text string }

func (b *bench) perfOne(ctx context.Context, s *scenario, argsFormat string) (string, error) {
	n := s.n
	data := filepath.Join(b.cfg.build, "perf-"+s.name+".data")
	id := s.name + ".perf"
	_, _, err := b.produce(ctx, id, n, false, func(ctx context.Context, prefix string) (map[string]any, error) {
		fields := strings.Fields(fmt.Sprintf(argsFormat, n))
		args := append([]string{"record", "-q", "-F", "4000", "-g", "-o", data, "--",
			filepath.Join(b.cfg.build, "mqbench"), fields[0], b.cfg.url, token(id), prefix}, fields[1:]...)
		return runJSON(ctx, []string{"METRICQ_LOG=warn"}, "perf", args...)
	})
	if err != nil {
		return "", err
	}
	rep, err := exec.Command("perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,symbol",
		"--percent-limit", "0.8", "-g", "none").Output()
	if err != nil {
		return "", err
	}
	children, _ := exec.Command("perf", "report", "-i", data, "--stdio", "--children", "--sort", "symbol",
		"--percent-limit", "2", "-g", "none").Output()
	_ = os.WriteFile(filepath.Join(b.cfg.build, "perf-"+s.name+".txt"), append(append(rep, "\n\n--- with children ---\n"...), children...), 0o644)
	var keep []string
	for _, l := range strings.Split(string(rep), "\n") {
		if t := strings.TrimSpace(l); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		keep = append(keep, strings.TrimRight(l, " -"))
	}
	log.Printf("perf %s: build/bench/perf-%s.txt", s.name, s.name)
	return strings.Join(keep, "\n"), nil
}

// --- the report ---------------------------------------------------------------------------

type verdict struct {
	label, figure, baseline, ratio, target, pass string
}

func passText(ok bool, have bool) string {
	if !have {
		return "n/a"
	}
	if ok {
		return "yes"
	}
	return "**no**"
}

func ratioText(a, b stat) (float64, string) {
	if !a.ok() || !b.ok() || b.med == 0 {
		return math.NaN(), "n/a"
	}
	r := a.med / b.med
	return r, fmt.Sprintf("%.2f", r)
}

func (b *bench) verdicts() []verdict {
	var v []verdict
	rate := func(name string) stat { return b.stat(name, "rate") }
	ceiling := func(a, c string) (stat, string) {
		x, y := rate(a), rate(c)
		if !y.ok() || (x.ok() && x.med >= y.med) {
			return x, a
		}
		return y, c
	}
	add := func(label string, fig stat, base stat, baseName string, min float64, f func(float64) string) {
		r, rt := ratioText(fig, base)
		v = append(v, verdict{label, fmtStat(fig, f), baseName + ": " + fmtStat(base, f), rt, fmt.Sprintf("≥ %.2g", min),
			passText(r >= min, !math.IsNaN(r))})
	}
	c1k, c1kName := ceiling("raw-noconfirm-1k", "raw-confirm-1k")
	c10k, c10kName := ceiling("raw-noconfirm-10k", "raw-confirm-10k")
	add("C `mq_source_send`, 1 thread, chunk 1000 (end to end)", rate("c-send-1k"), c1k, "raw ceiling ("+c1kName+")", 0.4, fmtRate)
	add("C `mq_metric_send` (metric handle), 1 thread, chunk 1000 (end to end)", rate("c-metric-send-1k"), c1k, "raw ceiling ("+c1kName+")", 0.6, fmtRate)
	add("C `mq_source_send_batch`, chunk 10000 (end to end)", rate("c-batch-10k"), c10k, "raw ceiling ("+c10kName+")", 0.7, fmtRate)
	add("C `mq_source_send`, 4 threads on 4 metrics", rate("c-send-1k-4t"), rate("c-send-1k"), "C 1 thread", 1.0, fmtRate)

	allocs := b.goStat("BenchmarkSend", "allocs")
	v = append(v, verdict{"Go `Source.Send`, chunk 1000: allocs/op (go test -benchmem)", fmtStat(allocs, fmtG("")),
		fmt.Sprintf("%s ns/op, %s B/op", fmtStat(b.goStat("BenchmarkSend", "ns"), fmtG("")), fmtStat(b.goStat("BenchmarkSend", "bytes"), fmtG(""))),
		"–", "0", passText(allocs.ok() && allocs.max == 0, allocs.ok())})

	add("Python `send_batch` (numpy), chunk 10000", rate("py-batch-10k"), rate("c-batch-10k"), "C send_batch", 0.5, fmtRate)
	refSync := "reference SynchronousSource.send"
	if msg := shippedErrors["ref-sync-1k"]; msg != "" {
		refSync += " (loop lookup fixed†)"
	}
	add("Python `send`, chunk 1000", rate("py-send-1k"), rate("ref-sync-1k"), refSync, 20, fmtRate)
	add("Python `send`, chunk 1000", rate("py-send-1k"), rate("ref-async-1k"), "reference async Source.send", 5, fmtRate)
	add("Python `metric(name).send` (metric handle), chunk 1000", rate("py-metric-send-1k"), rate("ref-async-1k"), "reference async Source.send", 10, fmtRate)

	p50, p99 := b.stat("latency-c1", "p50_us"), b.stat("latency-c1", "p99_us")
	v = append(v, verdict{"Latency, chunk 1, 2000 points/s: p99 (send → sink)", fmtStat(p99, fmtG(" µs")),
		"p50 " + fmtStat(p50, fmtG(" µs")) + "; raw floor (latency-raw) p50 " + fmtStat(b.stat("latency-raw", "p50_us"), fmtG(" µs")) +
			", p99 " + fmtStat(b.stat("latency-raw", "p99_us"), fmtG(" µs")), ratioOf(p99.med, 1000, p99.ok()), "< 1000 µs", passText(p99.med < 1000, p99.ok())})
	st := b.stat("startup", "median_ms")
	v = append(v, verdict{"`mq_source_new` to ready (loopback)", fmtStat(st, fmtG(" ms")),
		"first of 10: " + fmtStat(b.stat("startup", "first_ms"), fmtG(" ms")), ratioOf(st.med, 50, st.ok()), "< 50 ms", passText(st.med < 50, st.ok())})
	hwm := b.stat("rss-1m", "vmhwm_mb")
	v = append(v, verdict{"RSS of a C host, one source, after 1M points (VmHWM)", fmtStat(hwm, fmtG(" MB")),
		"VmRSS at end " + fmtStat(b.stat("rss-1m", "vmrss_mb"), fmtG(" MB")), ratioOf(hwm.med, 30, hwm.ok()), "< 30 MB", passText(hwm.max < 30, hwm.ok())})
	for _, name := range []string{"rss-1m", "rss-1m-bound64k"} {
		seen, bound := b.stat(name, "max_buffered_seen"), b.stat(name, "max_buffered")
		v = append(v, verdict{fmt.Sprintf("Buffered points bounded (%s; VmHWM %s)", name, fmtStat(b.stat(name, "vmhwm_mb"), fmtG(" MB"))),
			"max seen " + fmtStat(seen, fmtG("")), "bound " + fmtStat(bound, fmtG("")), ratioOf(seen.max, bound.med, seen.ok()),
			"≤ 1", passText(seen.max <= bound.med, seen.ok())})
	}
	return append(v, b.scaleVerdicts()...)
}

func ratioOf(a, b float64, have bool) string {
	if !have || b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func (b *bench) report() error {
	var w bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	m := b.machine
	p("# libmetricq benchmarks\n\n")
	p("Generated by `make bench` (bench/cmd/bench) on %s in %s: %d round(s) per scenario (BENCH_RUNS), about %.1f s per throughput run (BENCH_SECONDS). ",
		b.started.UTC().Format("2006-01-02 15:04 UTC"), time.Since(b.started).Round(time.Second), b.cfg.runs, b.cfg.seconds)
	p("Do not edit it by hand: the notes at the end come from bench/NOTES.md.\n\n")
	p("Every figure is the **median** of the rounds, with [min–max]; every ratio divides two medians of this same invocation, ")
	p("on the same broker, with the same sink. Throughput is **end to end**: from the producer's first send to the moment the sink ")
	p("(a raw AMQP consumer bound to `metricq.data`) has received the last point.\n\n")
	p("**Machine** (%s): %s, %d cores, %.1f GB RAM, Linux %s; RabbitMQ %s (Erlang %s) on 127.0.0.1, shared by producer, broker and sink; %s; %s.\n\n",
		m.Short, m.CPU, m.Cores, m.MemGB, m.Kernel, m.RabbitMQ, m.Erlang, m.Go, m.Python)

	p("## Targets\n\n")
	p("| scenario | figure | baseline | ratio | target | met | machine |\n|---|---|---|---|---|---|---|\n")
	for _, v := range b.verdicts() {
		p("| %s | %s | %s | %s | %s | %s | %s |\n", v.label, v.figure, v.baseline, v.ratio, v.target, v.pass, m.Short)
	}
	if msg := shippedErrors["ref-sync-1k"]; msg != "" {
		p("\n† The reference `metricq.SynchronousSource` 5.4.0 **cannot send from a plain thread as shipped**: `%s` ", mdEscape(msg))
		p("(PROTOCOL §8: it looks its event loop up with `asyncio.get_running_loop()` from the calling thread). ")
		p("The baseline is the same call with that one lookup fixed (the loop the source stored), chunk size 1000.\n")
	}

	p("\n## Throughput per scenario\n\n![points per second, end to end](%s)\n\n", relPath(b.cfg.out, b.cfg.chart))
	p("| scenario | what | points/run | end to end | send calls return at | CPU of the sending thread per point | runs |\n|---|---|---|---|---|---|---|\n")
	for _, s := range b.scenarios {
		if !s.throughput() {
			continue
		}
		p("| %s | %s | %d | %s | %s | %s | %d |\n", s.name, s.title, s.n, fmtStat(b.stat(s.name, "rate"), fmtRate),
			fmtStat(b.stat(s.name, "send_rate"), fmtRate), fmtStat(b.stat(s.name, "send_cpu_ns"), fmtG(" ns")), len(s.samples))
	}
	p("\n\"send calls return at\" is the rate at which the producer's calls returned (for the raw publisher: its publishes, ")
	p("and with confirms the last confirmation); the end-to-end figure also includes the broker routing and delivering ")
	p("everything to the sink. The CPU column is the sending thread's own CPU time (CLOCK_THREAD_CPUTIME_ID) over the points: ")
	p("it hardly depends on what else the machine is doing, so it is the figure to compare across runs and machines.\n\n")
	p("## Other scenarios\n\n| scenario | what | figures (median [min–max]) | runs |\n|---|---|---|---|\n")
	for _, s := range b.scenarios {
		if s.throughput() || strings.HasPrefix(s.name, "scale-") {
			continue
		}
		var figs []string
		keys := map[string]bool{}
		for _, smp := range s.samples {
			for k := range smp {
				keys[k] = true
			}
		}
		var names []string
		for k := range keys {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			figs = append(figs, k+" "+fmtStat(b.stat(s.name, k), fmtG("")))
		}
		p("| %s | %s | %s | %d |\n", s.name, s.title, strings.Join(figs, "; "), len(s.samples))
	}
	b.scaleReport(p)
	if len(b.goBench) > 0 {
		p("\n## Go benchmarks (`go test ./libmetricq -bench ^BenchmarkSend -benchmem`)\n\n")
		p("| benchmark | ns/op | B/op | allocs/op | points/s |\n|---|---|---|---|---|\n")
		seen := map[string]bool{}
		for _, g := range b.goBench {
			if seen[g.Name] {
				continue
			}
			seen[g.Name] = true
			p("| %s | %s | %s | %s | %s |\n", g.Name, fmtStat(b.goStat(g.Name, "ns"), fmtG("")), fmtStat(b.goStat(g.Name, "bytes"), fmtG("")),
				fmtStat(b.goStat(g.Name, "allocs"), fmtG("")), fmtStat(b.goStat(g.Name, "rate"), fmtRate))
		}
		p("\nBenchmarkSend and BenchmarkSendParallel: one point per op; BenchmarkSendBatch: 10000 points per op. Each includes ")
		p("publishing: the timer stops when the broker has confirmed every point (no sink bound).\n")
	}
	var errs []string
	for _, s := range b.scenarios {
		for _, e := range s.errs {
			errs = append(errs, fmt.Sprintf("- %s: %s", s.name, mdEscape(e)))
		}
	}
	if len(errs) > 0 {
		p("\n## Failures in this invocation\n\n%s\n", strings.Join(errs, "\n"))
	}
	if b.goProfile != "" {
		p("\n## Profile: Go send path (pprof of the go test benchmarks above, `go tool pprof -top`)\n\n```\n%s```\n", trimProfile(b.goProfile, 22))
	}
	for _, pr := range b.perf {
		p("\n## Profile: %s (perf record; self time by object and symbol, all threads of the C host)\n\n```\n%s\n```\n", pr.title, firstLines(pr.text, 28))
	}
	if notes, err := os.ReadFile(filepath.Join(b.cfg.root, "bench", "NOTES.md")); err == nil {
		p("\n%s", notes)
	}
	p("\n## Rerunning\n\n`make bench` (as root on a fresh machine: it installs RabbitMQ, gnuplot and the virtualenv when missing). ")
	p("`BENCH_RUNS=1 BENCH_SECONDS=0.5 make bench` for a quick look; `BENCH_ONLY=regexp` for some scenarios. ")
	p("The samples of every run are in build/bench/results.json; profiles in build/bench/.\n")

	if err := os.WriteFile(b.cfg.out, w.Bytes(), 0o644); err != nil {
		return err
	}
	log.Printf("wrote %s", b.cfg.out)
	if err := b.writeResults(); err != nil {
		log.Printf("results.json: %v", err)
	}
	if err := b.chart(); err != nil {
		log.Printf("chart: %v", err)
	} else {
		log.Printf("wrote %s", b.cfg.chart)
	}
	return nil
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", "\\|", "\n", " ", "`", "'").Replace(s)
}

func relPath(from, to string) string {
	r, err := filepath.Rel(filepath.Dir(from), to)
	if err != nil {
		return to
	}
	return r
}

func trimProfile(s string, entries int) string {
	lines := strings.Split(s, "\n")
	var out []string
	body := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") {
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(l), "flat") {
			body = 1
			out = append(out, l)
			continue
		}
		if body > 0 {
			if body > entries {
				break
			}
			body++
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n") + "\n"
}

func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

func (b *bench) writeResults() error {
	type scen struct {
		Name    string   `json:"name"`
		Title   string   `json:"title"`
		Points  int      `json:"points_per_run,omitempty"`
		Samples []sample `json:"samples"`
		Errors  []string `json:"errors,omitempty"`
	}
	doc := struct {
		Started   time.Time     `json:"started"`
		Machine   machineInfo   `json:"machine"`
		Runs      int           `json:"runs"`
		Scenarios []scen        `json:"scenarios"`
		GoBench   []goBenchLine `json:"go_bench"`
	}{Started: b.started, Machine: b.machine, Runs: b.cfg.runs, GoBench: b.goBench}
	for _, s := range b.scenarios {
		doc.Scenarios = append(doc.Scenarios, scen{s.name, s.title, s.n, s.samples, s.errs})
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(b.cfg.build, "results.json"), data, 0o644)
}

// chart renders median points/s per throughput scenario, min–max as error
// bars, on a log scale, with gnuplot.
func (b *bench) chart() error {
	if _, err := exec.LookPath("gnuplot"); err != nil {
		return fmt.Errorf("gnuplot not installed (scripts/ensure-tools.sh gnuplot)")
	}
	colors := map[string]string{"raw": "0x999999", "c": "0x1f77b4", "py": "0x2ca02c", "ref": "0xd62728", "go": "0x9467bd"}
	var data bytes.Buffer
	i := 0
	for _, s := range b.scenarios {
		st := b.stat(s.name, "rate")
		if !s.throughput() || !st.ok() {
			continue
		}
		fmt.Fprintf(&data, "%d \"%s\" %g %g %g %s \"%s\"\n", i, s.name, st.med, st.min, st.max, colors[s.lang], shortRate(st.med))
		i++
	}
	if g := b.goStat("BenchmarkSend", "rate"); g.ok() {
		fmt.Fprintf(&data, "%d \"%s\" %g %g %g %s \"%s\"\n", i, "go-Send", g.med, g.min, g.max, colors["go"], shortRate(g.med))
		i++
	}
	if i == 0 {
		return fmt.Errorf("no throughput figures")
	}
	datFile := filepath.Join(b.cfg.build, "throughput.dat")
	if err := os.WriteFile(datFile, data.Bytes(), 0o644); err != nil {
		return err
	}
	m := b.machine
	script := fmt.Sprintf(`set terminal pngcairo size 1200,650 font "sans,10"
set output %q
set title "libmetricq: points per second into MetricQ, end to end to a sink (median of %d runs, bars: min-max)\n%s, %d cores; RabbitMQ %s on loopback; %s"
set style fill solid 0.75 border -1
set logscale y
set format y "10^{%%L}"
set ylabel "points per second (log scale)"
set grid ytics mytics
set xtics rotate by -30 left nomirror
set key off
set xrange [-0.6:%d-0.4]
set yrange [*:*]
set bmargin 9
set rmargin 10
set label 1 "grey: raw amqp091-go ceiling   blue: C library   green: Python binding   red: reference Python metricq 5.4.0   purple: Go Send (go test, to broker confirm, no sink)" at screen 0.01, screen 0.03 font "sans,9"
plot %q using 1:3:4:5:(0.35):6:xtic(2) with boxerrorbars lc rgb variable, \
     '' using 1:5:7 with labels offset 0,0.8 font "sans,9"
`, b.cfg.chart, b.cfg.runs, strings.ReplaceAll(m.CPU, "\"", ""), m.Cores, m.RabbitMQ, m.Go, i, datFile)
	scriptFile := filepath.Join(b.cfg.build, "throughput.gp")
	if err := os.WriteFile(scriptFile, []byte(script), 0o644); err != nil {
		return err
	}
	cmd := exec.Command("gnuplot", scriptFile)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("gnuplot: %v: %s", err, stderr.String())
	}
	return nil
}

func shortRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.3gk", v/1e3)
	}
	return fmt.Sprintf("%.3g", v)
}
