package libmetricq_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// Network faults injected by a proxy between the source and the broker
// (the manager and the sink talk to the broker directly). Each test streams
// through the fault and checks: every accepted point arrives once and in
// order (whole republished chunks aside), nothing refused arrives, points
// sent after the recovery arrive, the fault is noticed and repaired within
// bounds, and no call outlived its timeout. The measured times are logged
// as "measured: ..." lines (docs/reliability.md quotes them).

// testHeartbeat keeps the tests short; one test runs with the default.
const testHeartbeat = 2 * time.Second

// readDeadlineBound bounds noticing a peer that sends nothing: amqp091-go
// gives up after 1.5 intervals; the rest is for a loaded machine.
const readDeadlineBound = 2*testHeartbeat + time.Second

type networkFault struct {
	heartbeat  time.Duration
	batch      int // points per metric and tick (1 ms), to fill the socket buffers
	data, mgmt bool
	inject     func(t *testing.T, p *testenv.FaultProxy)
	heal       func(t *testing.T, p *testenv.FaultProxy) // after the detection, if set
	detect     time.Duration                             // bound on noticing it
	wantLog    []string                                  // what the log must show
	recover    time.Duration                             // bound on repairing it, from the detection (or the heal)
}

func runNetworkFault(t *testing.T, f networkFault) {
	startManager(t, manager.Config{})
	token := testenv.Token(t, "source")
	metrics := []string{"net.fault.a", "net.fault.b"}
	sink := newDurableSink(t, testenv.URL(t), metrics...)
	proxy, proxied := testenv.NewFaultProxy(t, testenv.URL(t))
	var rep republished
	var logs logBuffer
	opts := []libmetricq.Option{libmetricq.WithChunkSize(10), rep.hook(), libmetricq.WithLogger(logs.logger())}
	if f.heartbeat != 0 {
		opts = append(opts, libmetricq.WithHeartbeat(f.heartbeat))
	}
	if f.batch > 1 {
		opts[0] = libmetricq.WithChunkSize(10 * f.batch)
	}
	src := connectURL(t, proxied, token, opts...)
	if err := src.DeclareMetricList(context.Background(), metrics); err != nil {
		t.Fatal(err)
	}
	st := startBatchStream(t, src, metrics, streamEvery, max(f.batch, 1), sendTimeout)
	st.flowing(t, 200*max(f.batch, 1))
	waitUntil(t, 10*time.Second, "both connections through the proxy", func() bool {
		return proxy.Connections("data") == 1 && proxy.Connections("management") == 1
	})

	before := src.Stats()
	start := time.Now()
	f.inject(t, proxy)
	noticed := func() bool {
		s := src.Stats()
		return (!f.data || !s.DataConnected || s.Reconnects > before.Reconnects) &&
			(!f.mgmt || !s.ManagementConnected || s.ManagementReconnects > before.ManagementReconnects)
	}
	waitUntil(t, f.detect+5*time.Second, "the source to notice the fault", noticed)
	detected := time.Since(start)
	if detected > f.detect {
		t.Fatalf("noticed after %v, want within %v", detected, f.detect)
	}
	healed := time.Now()
	callsAreBounded(t, src, !f.mgmt)
	if f.heal != nil {
		f.heal(t, proxy)
		healed = time.Now()
	}
	waitUntil(t, f.recover+10*time.Second, "the source to reconnect", func() bool {
		s := src.Stats()
		return s.DataConnected && s.ManagementConnected &&
			(!f.data || s.Reconnects > before.Reconnects) && (!f.mgmt || s.ManagementReconnects > before.ManagementReconnects)
	})
	recovered := time.Since(healed)
	if recovered > f.recover {
		t.Fatalf("recovered %v after the detection (or the repair), want within %v", recovered, f.recover)
	}
	heartbeat := f.heartbeat
	if heartbeat == 0 {
		heartbeat = libmetricq.DefaultHeartbeat
	}
	t.Logf("measured: heartbeat %v: noticed after %v, recovered %v later", heartbeat, detected.Round(10*time.Millisecond), recovered.Round(10*time.Millisecond))

	st.flowing(t, 200*max(f.batch, 1))
	total, repeats := deliveredOnce(t, st, src, sink, &rep)
	stats := src.Stats()
	if stats.PointsAccepted != uint64(total) || stats.PointsConfirmed != uint64(total) || stats.PointsDropped != 0 {
		t.Fatalf("stats %+v, %d accepted", stats, total)
	}
	if !f.data && stats.Reconnects != before.Reconnects {
		t.Fatalf("the data connection reconnected, though only the management connection failed: %+v", stats)
	}
	if !f.mgmt && stats.ManagementReconnects != before.ManagementReconnects {
		t.Fatalf("the management connection reconnected, though only the data connection failed: %+v", stats)
	}
	if st.slowest > sendTimeout+time.Second {
		t.Fatalf("a send took %v with a %v timeout", st.slowest, sendTimeout)
	}
	mustContain(t, "the log", logs.String(), f.wantLog...)
	t.Logf("%d points, %d send timeouts, %d chunks republished, %d arrived twice", total, st.timeouts, stats.ChunksRepublished, repeats)
}

// callsAreBounded checks that a declaration and a flush made during the
// fault return within their timeout; a declaration must succeed when the
// management connection is not the one failing.
func callsAreBounded(t *testing.T, src *libmetricq.Source, declareWorks bool) {
	t.Helper()
	const timeout = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err := src.DeclareMetricList(ctx, []string{"net.fault.declared-during"})
	if took := time.Since(start); took > timeout+testenv.LateMargin {
		t.Fatalf("a declaration during the fault took %v with a %v timeout", took, timeout)
	}
	if declareWorks && err != nil {
		t.Fatalf("a declaration while only the data connection fails: %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), timeout)
	defer cancel2()
	start = time.Now()
	_ = src.Flush(ctx2) // may fail: the point is that it returns
	if took := time.Since(start); took > timeout+testenv.LateMargin {
		t.Fatalf("a flush during the fault took %v with a %v timeout", took, timeout)
	}
}

// Both connections: no byte moves either way, every socket stays open.
func TestNetworkBlackholeBothWays(t *testing.T) {
	runNetworkFault(t, networkFault{
		heartbeat: testHeartbeat, batch: 20, data: true, mgmt: true,
		inject: func(t *testing.T, p *testenv.FaultProxy) { p.Stall("", testenv.Up, testenv.Down) },
		detect: readDeadlineBound, recover: 20 * time.Second,
		// The broker notices the dead connection after the source does
		// and keeps its exclusive RPC queue until then: the source retries.
		wantLog: []string{"management connection failed, retrying", "is held by another connection"},
	})
}

// With no option set, a silent peer is noticed within 30 s: both
// directions silent (noticed by the source itself) ...
func TestNetworkBlackholeDefaultHeartbeat(t *testing.T) {
	runNetworkFault(t, networkFault{
		batch: 20, data: true, mgmt: true,
		inject: func(t *testing.T, p *testenv.FaultProxy) { p.Stall("", testenv.Up, testenv.Down) },
		detect: 30 * time.Second, recover: 40 * time.Second,
	})
}

// ... and only what the source sends lost (noticed by the broker, whose
// close reaches the source, or by the write deadline).
func TestNetworkSilentUpstreamDefaultHeartbeat(t *testing.T) {
	runNetworkFault(t, networkFault{
		batch: 20, data: true, mgmt: true,
		inject: func(t *testing.T, p *testenv.FaultProxy) { p.Stall("", testenv.Up) },
		detect: 30 * time.Second, recover: 10 * time.Second,
	})
}

// Only what the source sends is lost; the broker's frames still arrive.
func TestNetworkSilentUpstream(t *testing.T) {
	runNetworkFault(t, networkFault{
		heartbeat: testHeartbeat, batch: 20, data: true, mgmt: true,
		inject: func(t *testing.T, p *testenv.FaultProxy) { p.Stall("", testenv.Up) },
		// The source still hears the broker, so the broker notices first
		// (2 to 3 intervals without a frame, later on a loaded machine) and
		// closes; on the busy data connection the write deadline may come
		// first.
		detect: 8 * testHeartbeat, recover: 20 * time.Second,
	})
}

// Only what the broker sends is lost.
func TestNetworkSilentDownstream(t *testing.T) {
	runNetworkFault(t, networkFault{
		heartbeat: testHeartbeat, data: true, mgmt: true,
		inject: func(t *testing.T, p *testenv.FaultProxy) { p.Stall("", testenv.Down) },
		detect: readDeadlineBound, recover: 20 * time.Second,
	})
}

// A reset in the middle of a frame the source is sending.
func TestNetworkResetMidFrame(t *testing.T) {
	runNetworkFault(t, networkFault{
		heartbeat: testHeartbeat, data: true,
		inject: func(t *testing.T, p *testenv.FaultProxy) {
			if p.ResetMidFrame("data") != 1 {
				t.Fatal(p)
			}
		},
		detect: time.Second, recover: 5 * time.Second,
	})
}

// Every connection reset, the broker unreachable for 10 s, then back.
func TestNetworkUnreachableTenSeconds(t *testing.T) {
	runNetworkFault(t, networkFault{
		heartbeat: testHeartbeat, data: true, mgmt: true,
		inject: func(t *testing.T, p *testenv.FaultProxy) { p.SetUnreachable(true) },
		heal: func(t *testing.T, p *testenv.FaultProxy) {
			// The outage lasts 10 s from the reset, however fast the source noticed.
			time.Sleep(10 * time.Second) // the fault's length, not a synchronisation
			p.SetUnreachable(false)
		},
		detect: time.Second, recover: 7 * time.Second,
	})
}

// Only the data connection falls silent: the management link carries on.
func TestNetworkDataOnlyBlackhole(t *testing.T) {
	runNetworkFault(t, networkFault{
		heartbeat: testHeartbeat, batch: 20, data: true,
		inject: func(t *testing.T, p *testenv.FaultProxy) {
			if p.Stall("data", testenv.Up, testenv.Down) != 1 {
				t.Fatal(p)
			}
		},
		detect: readDeadlineBound, recover: 5 * time.Second,
	})
}

// Only the management connection falls silent: data keeps flowing.
func TestNetworkManagementOnlyBlackhole(t *testing.T) {
	runNetworkFault(t, networkFault{
		heartbeat: testHeartbeat, mgmt: true,
		inject: func(t *testing.T, p *testenv.FaultProxy) {
			if p.Stall("management", testenv.Up, testenv.Down) != 1 {
				t.Fatal(p)
			}
		},
		detect: readDeadlineBound, recover: 20 * time.Second,
		wantLog: []string{"management connection failed, retrying", "is held by another connection"},
	})
}

// Stop in the middle of each fault returns within its timeout, with what
// the broker did not confirm counted as dropped and named in the error;
// nothing refused arrives, and what arrives is in order.
func TestNetworkStopIsBounded(t *testing.T) {
	faults := map[string]func(p *testenv.FaultProxy){
		"blackhole":        func(p *testenv.FaultProxy) { p.Stall("", testenv.Up, testenv.Down) },
		"silent upstream":  func(p *testenv.FaultProxy) { p.Stall("", testenv.Up) },
		"unreachable":      func(p *testenv.FaultProxy) { p.SetUnreachable(true) },
		"data blackholed":  func(p *testenv.FaultProxy) { p.Stall("data", testenv.Up, testenv.Down) },
		"management stuck": func(p *testenv.FaultProxy) { p.Stall("management", testenv.Up, testenv.Down) },
	}
	startManager(t, manager.Config{})
	for name, inject := range faults {
		t.Run(name, func(t *testing.T) {
			token := testenv.Token(t, "source")
			metric := "net.stop." + strings.ReplaceAll(name, " ", "-")
			sink := newDurableSink(t, testenv.URL(t), metric)
			proxy, proxied := testenv.NewFaultProxy(t, testenv.URL(t))
			// The default heartbeat: the fault is not noticed before Stop.
			src := connectURL(t, proxied, token, libmetricq.WithChunkSize(200), libmetricq.WithLogger(slogDiscard()))
			if err := src.DeclareMetricList(context.Background(), []string{metric}); err != nil {
				t.Fatal(err)
			}
			st := startBatchStream(t, src, []string{metric}, streamEvery, 20, sendTimeout)
			st.flowing(t, 4000)
			inject(proxy)
			st.flowing(t, 4000) // points accepted that cannot get through
			want, total := st.finish(t)

			const timeout = time.Second
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			start := time.Now()
			err := src.Stop(ctx)
			took := time.Since(start)
			if took > timeout+testenv.LateMargin {
				t.Fatalf("Stop took %v with a %v timeout", took, timeout)
			}
			stats := src.Stats()
			t.Logf("measured: Stop returned after %v: %d of %d points dropped: %v", took.Round(time.Millisecond), stats.PointsDropped, total, err)
			if stats.PointsDropped+stats.PointsConfirmed != uint64(total) {
				t.Fatalf("%d accepted, but %d confirmed + %d dropped", total, stats.PointsConfirmed, stats.PointsDropped)
			}
			if stats.PointsDropped > 0 && (err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d points not delivered", stats.PointsDropped))) {
				t.Fatalf("%d points dropped, but Stop said: %v", stats.PointsDropped, err)
			}
			if strings.HasPrefix(name, "management") && stats.PointsDropped != 0 {
				t.Fatalf("a stuck management connection cost %d points", stats.PointsDropped)
			}
			if !strings.HasPrefix(name, "management") && stats.PointsDropped == 0 {
				t.Fatal("nothing was dropped: the fault did not hold points back")
			}
			// What arrives is an in-order prefix of what was accepted.
			sink.verifyPrefix(t, metric, want[metric], int(stats.PointsConfirmed))
		})
	}
}
