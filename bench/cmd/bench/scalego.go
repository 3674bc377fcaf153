package main

// The Go host of the scaling section: the driver runs itself again with
// goScaleMode, so that the producer's memory is measured in a process of
// its own, as mqbench's and pybench's are.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/libmetricq/libmetricq/libmetricq"
)

const goScaleMode = "go-scale-producer"

// goScaleProducer is mqbench scale in Go (by metric handle): URL TOKEN PREFIX METRICS
// POINTS CHUNK; a warm-up round of METRICS points, then POINTS; it prints
// the same JSON object.
func goScaleProducer(args []string) {
	if len(args) != 6 {
		log.Fatalf("%s: want URL TOKEN PREFIX METRICS POINTS CHUNK", goScaleMode)
	}
	url, token, prefix := args[0], args[1], args[2]
	var nums [3]int
	for i, a := range args[3:] {
		n, err := strconv.Atoi(a)
		if err != nil || n < 0 {
			log.Fatalf("%s: bad number %q", goScaleMode, a)
		}
		nums[i] = n
	}
	metrics, points, chunk := nums[0], nums[1], nums[2]
	out, err := goScale(url, token, prefix, metrics, points, chunk)
	if err != nil {
		log.Fatalf("%s: %v", goScaleMode, err)
	}
	data, _ := json.Marshal(out)
	fmt.Println(string(data))
}

func goScale(url, token, prefix string, metrics, points, chunk int) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	src, err := libmetricq.NewSource(url, token, libmetricq.WithChunkSize(chunk))
	if err != nil {
		return nil, err
	}
	if err := src.Connect(ctx); err != nil {
		return nil, err
	}
	defer src.Stop(ctx)
	names := make([]string, metrics)
	for i := range names {
		names[i] = prefix + "." + strconv.Itoa(i)
	}
	rssConnected := vmRSSKB()
	declare0 := time.Now()
	if err := src.DeclareMetricList(ctx, names); err != nil {
		return nil, err
	}
	declareNs := time.Since(declare0).Nanoseconds()
	rssDeclared := vmRSSKB()

	// A handle per metric, taken before the timed rounds as mqbench's
	// handle mode does; one place for how a point reaches metric m, for the
	// warm-up and the steady state alike.
	handles := make([]*libmetricq.Metric, metrics)
	for i, name := range names {
		if handles[i], err = src.Metric(name); err != nil {
			return nil, err
		}
	}
	send := func(m int, t libmetricq.Timestamp) error { return handles[m].Send(ctx, t, 1.0) }

	// The thread's own CPU time, as mqbench measures its sending thread.
	// The warm-up gives every metric its first point (its chunk is
	// allocated then), timed apart from the steady state.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t := libmetricq.Now()
	start, cpu0 := time.Now().UnixNano(), threadCPUNs()
	for m := range metrics {
		if err := send(m, t); err != nil {
			return nil, fmt.Errorf("first point: %w", err)
		}
	}
	firstCPU := threadCPUNs() - cpu0
	cpu0 = threadCPUNs()
	for i := range points {
		m := i % metrics
		if m == 0 {
			t += 1000
		}
		if err := send(m, t); err != nil {
			return nil, err
		}
	}
	cpu, sent := threadCPUNs()-cpu0, time.Now().UnixNano()
	rssSent := vmRSSKB()
	if err := src.Flush(ctx); err != nil {
		return nil, err
	}
	return map[string]any{
		"start_ns": start, "sent_ns": sent, "points": points, "metrics": metrics, "declare_ns": declareNs,
		"first_cpu_ns_per_point": float64(firstCPU) / float64(max(metrics, 1)),
		"cpu_ns_per_point":       float64(cpu) / float64(max(points, 1)), "rss_connected_kb": rssConnected,
		"rss_declared_kb": rssDeclared, "rss_sent_kb": rssSent,
	}, nil
}

// threadCPUNs is the calling thread's CPU time, CLOCK_THREAD_CPUTIME_ID as
// mqbench reads it: getrusage(RUSAGE_THREAD) reports it in steps too
// coarse for the warm-up round of 100 metrics (it read 0).
func threadCPUNs() int64 {
	const clockThreadCPUTimeID = 3
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTimeID, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0
	}
	return ts.Nano()
}

func vmRSSKB() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb
		}
	}
	return -1
}
