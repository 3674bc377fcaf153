package libmetricq_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
	"github.com/libmetricq/libmetricq/libmetricq/manager"
)

// While a source streams: the broker's flow control (a memory alarm) blocks
// it, which the stats and the log show; then the broker application
// restarts (rabbitmqctl stop_app / start_app), taking the manager with it.
// The source rides both out: it reconnects, registers and declares again at
// the new manager, republishes what was unconfirmed, and the sink's quorum
// queue (which survives the restart) gets every accepted point.
//
// Both change the broker for everyone, so the test takes the broker lock
// exclusively (testenv.ExclusiveBroker): it waits until no other test
// binary uses the broker.
func TestFaultBrokerRestartAndFlowControl(t *testing.T) {
	testenv.ExclusiveBroker(t)
	startManager(t, manager.Config{})
	token := testenv.Token(t, "source")
	metrics := []string{"fault.restart.a", "fault.restart.b"}
	sink := newDurableSink(t, testenv.URL(t), metrics...)
	var rep republished
	var logs logBuffer
	src := connect(t, token, libmetricq.WithChunkSize(10), rep.hook(), libmetricq.WithLogger(logs.logger()))
	ctx := context.Background()
	if err := src.DeclareMetrics(ctx, map[string]libmetricq.Metadata{metrics[0]: {"unit": "A"}, metrics[1]: {"unit": "B"}}); err != nil {
		t.Fatal(err)
	}
	st := startStream(t, src, metrics, streamEvery, 10*time.Second)
	st.flowing(t, 200)

	// Flow control: a memory watermark below what the broker uses raises
	// the memory alarm, which blocks publishing connections.
	watermark := strings.TrimSpace(testenv.Rabbitmqctl(t, "eval", "vm_memory_monitor:get_vm_memory_high_watermark()."))
	restoreWatermark := func() {
		if strings.HasPrefix(watermark, "{absolute,") {
			testenv.Rabbitmqctl(t, "set_vm_memory_high_watermark", "absolute", strings.Trim(strings.TrimPrefix(watermark, "{absolute,"), "} "))
		} else {
			testenv.Rabbitmqctl(t, "set_vm_memory_high_watermark", watermark)
		}
	}
	t.Cleanup(restoreWatermark)
	testenv.Rabbitmqctl(t, "set_vm_memory_high_watermark", "0.000001")
	waitUntil(t, 15*time.Second, "the broker to block the source", func() bool { return src.Stats().Blocked })
	blocked := src.Stats()
	st.flowing(t, 200)
	if st := src.Stats(); st.PointsConfirmed > blocked.PointsConfirmed+50 || st.BlockedEvents < 1 || st.BufferedPoints == 0 {
		t.Fatalf("while blocked: %+v (when the block began: %+v)", st, blocked)
	}
	mustContain(t, "the log", logs.String(), "flow control")
	restoreWatermark()
	waitUntil(t, 15*time.Second, "the broker to unblock the source", func() bool { return !src.Stats().Blocked })

	// Broker restart.
	started := true
	t.Cleanup(func() {
		if !started {
			testenv.Rabbitmqctl(t, "start_app")
		}
	})
	t0 := time.Now()
	started = false
	testenv.Rabbitmqctl(t, "stop_app")
	stopped := time.Since(t0)
	waitUntil(t, 10*time.Second, "the source to notice", func() bool { return !src.Stats().DataConnected })
	st.flowing(t, 200)
	t1 := time.Now()
	testenv.Rabbitmqctl(t, "start_app")
	started = true
	t.Logf("stop_app took %v, start_app %v", stopped.Round(time.Millisecond), time.Since(t1).Round(time.Millisecond))
	mgr2 := startManager(t, manager.Config{}) // the first one ended with its connection
	waitUntil(t, 30*time.Second, "the source to reconnect", connected(src))
	if md := mgr2.Metadata(); md[metrics[0]]["unit"] != "A" || md[metrics[1]]["unit"] != "B" {
		t.Fatalf("the new manager did not get the declarations again: %v", md)
	}
	st.flowing(t, 200)
	want, total := st.finish(t)
	flushCtx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	if err := src.Flush(flushCtx); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(t, want, waitLimit)
	repeats := sink.verify(t, want, &rep)
	stats := src.Stats()
	if stats.PointsConfirmed != uint64(total) || stats.PointsDropped != 0 || stats.Reconnects < 1 || stats.ManagementReconnects < 1 {
		t.Fatalf("stats %+v, %d accepted", stats, total)
	}
	t.Logf("%d points; %d chunks republished, %d reached the sink twice", total, stats.ChunksRepublished, repeats)
}
