package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// metadataEvery is how often the declared metrics are fetched again.
const metadataEvery = time.Second

// monitor is what watch and tail -http share: a board fed with the chunks
// that arrive, the declared metrics (polled from the manager) and, with
// -http, the browser view.
type monitor struct {
	board *board
	cat   *catalog // nil when the metadata are unavailable
	web   *webView // nil without -http
	log   *slog.Logger

	stop chan struct{}
	kick chan struct{} // fetch the metadata now: a metric appeared
	wg   sync.WaitGroup
	once sync.Once
}

// startMonitor starts polling the metadata and, when httpAddr is set,
// serving the browser view. A failing metadata connection is only a
// warning: the points are shown all the same.
func startMonitor(url, token string, bindings []string, httpAddr, title string, log *slog.Logger, stderr io.Writer) (*monitor, error) {
	m := &monitor{board: newBoard(bindings, httpAddr != ""), log: log, stop: make(chan struct{}), kick: make(chan struct{}, 1)}
	if httpAddr != "" {
		web, err := startWeb(httpAddr, m.board, viewInfo{
			Title:    title,
			Broker:   amqpkit.RedactURL(url),
			Bindings: bindings,
			Started:  m.board.started.UnixMilli(),
		}, log)
		if err != nil {
			return nil, err
		}
		m.web = web
	}
	cat, err := dialCatalog(url, token)
	if err != nil {
		fmt.Fprintf(stderr, "warning: metric metadata unavailable: %v\n", err)
	} else {
		m.cat = cat
	}
	m.wg.Add(1)
	go m.run()
	return m, nil
}

func (m *monitor) run() {
	defer m.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	poll := time.NewTicker(metadataEvery)
	defer poll.Stop()
	m.pollMetadata()
	for {
		select {
		case <-m.stop:
			return
		case now := <-tick.C:
			m.board.tick(now)
		case <-poll.C:
			m.pollMetadata()
		case <-m.kick:
			m.pollMetadata()
		}
	}
}

// pollMetadata fetches the declared metrics once.
func (m *monitor) pollMetadata() {
	if m.cat == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	docs, err := m.cat.getMetrics(ctx)
	if err != nil {
		m.log.Debug("could not fetch the metadata", "error", err)
		return
	}
	m.board.setMetadata(docs)
}

// add records a chunk.
func (m *monitor) add(metric string, points []libmetricq.Point) {
	if m.board.add(metric, points) {
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
}

// close stops polling and the browser view (whose pages get "end").
func (m *monitor) close() {
	m.once.Do(func() {
		close(m.stop)
		m.wg.Wait()
		if m.web != nil {
			if err := m.web.Close(); err != nil {
				m.log.Debug("http server shutdown", "error", err)
			}
		}
		if m.cat != nil {
			m.cat.close()
		}
	})
}
