package main

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/libmetricq/libmetricq/libmetricq"
)

//go:embed web
var webFiles embed.FS

// Timing of the browser view.
const (
	pointsEvery  = 250 * time.Millisecond // "points" events
	metricsEvery = time.Second            // "metrics" events
	clientQueue  = 64                     // events queued per page; a slower page is dropped
)

// webView serves the browser view of a board:
//
//	/             the page (web/)
//	/api/metrics  the metrics, their metadata and counts (JSON)
//	/events       server-sent events: "info" once, then "metrics" (as
//	              /api/metrics) every second, "points" ({"<metric>":
//	              [[<ms since the epoch>, <value>], ...]}) every 250 ms, and
//	              "end" when watching stops
type webView struct {
	board *board
	info  []byte // the "info" event
	log   *slog.Logger
	srv   *http.Server
	ln    net.Listener
	url   string

	mu      sync.Mutex // held while fanning out, so a new page gets history then live points without gaps
	clients map[chan []byte]struct{}
	quit    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// viewInfo is the "info" event: what is being watched.
type viewInfo struct {
	Title    string   `json:"title"`
	Broker   string   `json:"broker"` // without password
	Bindings []string `json:"bindings"`
	Started  int64    `json:"started"` // ms since the epoch
}

// listenAddress reads [HOST]:PORT; an empty host means 127.0.0.1 (the view
// is for this machine; 0.0.0.0:PORT serves others too).
func listenAddress(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("-http %q: want [HOST]:PORT", addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

func startWeb(addr string, b *board, info viewInfo, log *slog.Logger) (*webView, error) {
	addr, err := listenAddress(addr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-http: %w", err)
	}
	infoJSON, _ := json.Marshal(info)
	w := &webView{
		board:   b,
		info:    sseEvent("info", infoJSON),
		log:     log,
		ln:      ln,
		clients: make(map[chan []byte]struct{}),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	w.url = "http://" + net.JoinHostPort(host, port) + "/"

	static, _ := fs.Sub(webFiles, "web")
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(static))
	mux.HandleFunc("GET /api/metrics", w.serveMetrics)
	mux.HandleFunc("GET /events", w.serveEvents)
	w.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := w.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("http server stopped", "error", err)
		}
	}()
	go w.pump()
	return w, nil
}

// URL is the page's address.
func (w *webView) URL() string { return w.url }

func (w *webView) serveMetrics(rw http.ResponseWriter, _ *http.Request) {
	rw.Header().Set("Content-Type", "application/json")
	rw.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(rw).Encode(w.board.snapshot())
}

func (w *webView) serveEvents(rw http.ResponseWriter, r *http.Request) {
	flusher, ok := rw.(http.Flusher)
	if !ok {
		http.Error(rw, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "text/event-stream")
	rw.Header().Set("Cache-Control", "no-store")
	rw.Header().Set("X-Accel-Buffering", "no")

	events := make(chan []byte, clientQueue)
	w.mu.Lock()
	select {
	case <-w.quit:
		w.mu.Unlock()
		_, _ = rw.Write(append([]byte("retry: 3000\n\n"), sseEvent("end", []byte("{}"))...))
		return
	default:
	}
	snapshot, _ := json.Marshal(w.board.snapshot())
	history := w.board.history()
	w.clients[events] = struct{}{}
	w.mu.Unlock()
	defer w.drop(events)

	var first bytes.Buffer
	first.WriteString("retry: 2000\n\n")
	first.Write(w.info)
	first.Write(sseEvent("metrics", snapshot))
	if len(history) > 0 {
		first.Write(sseEvent("points", pointsJSON(history)))
	}
	if _, err := rw.Write(first.Bytes()); err != nil {
		return
	}
	flusher.Flush()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return // dropped: too slow, or the view stopped
			}
			if _, err := rw.Write(ev); err != nil {
				return
			}
			flusher.Flush()
		case <-r.Context().Done():
			return
		}
	}
}

func (w *webView) drop(events chan []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.clients[events]; ok {
		delete(w.clients, events)
		close(events)
	}
}

// broadcast queues an event for every page, dropping pages that fall
// behind (their EventSource reconnects). Call with w.mu held.
func (w *webView) broadcast(ev []byte) {
	for c := range w.clients {
		select {
		case c <- ev:
		default:
			w.log.Debug("dropping a slow page")
			delete(w.clients, c)
			close(c)
		}
	}
}

func (w *webView) pump() {
	defer close(w.done)
	points := time.NewTicker(pointsEvery)
	defer points.Stop()
	lastMetrics := time.Now()
	for {
		select {
		case <-w.quit:
			w.mu.Lock()
			w.flushPoints()
			snapshot, _ := json.Marshal(w.board.snapshot())
			w.broadcast(sseEvent("metrics", snapshot))
			w.broadcast(sseEvent("end", []byte("{}")))
			for c := range w.clients {
				delete(w.clients, c)
				close(c)
			}
			w.mu.Unlock()
			return
		case now := <-points.C:
			w.mu.Lock()
			// A new metric is listed at once, not only at the next second.
			if w.board.takeChanged() || now.Sub(lastMetrics) >= metricsEvery {
				lastMetrics = now
				snapshot, _ := json.Marshal(w.board.snapshot())
				w.broadcast(sseEvent("metrics", snapshot))
			}
			w.flushPoints()
			w.mu.Unlock()
		}
	}
}

// flushPoints sends what arrived since the last flush. Call with w.mu held.
func (w *webView) flushPoints() {
	if fresh := w.board.takeFresh(); len(fresh) > 0 {
		w.broadcast(sseEvent("points", pointsJSON(fresh)))
	}
}

// Close sends "end" to the pages and stops the server.
func (w *webView) Close() error {
	var err error
	w.once.Do(func() {
		close(w.quit)
		<-w.done
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err = w.srv.Shutdown(ctx)
		if err != nil {
			err = w.srv.Close()
		}
	})
	return err
}

func sseEvent(name string, data []byte) []byte {
	// data is JSON without newlines, so one data line suffices.
	out := make([]byte, 0, len(name)+len(data)+16)
	out = append(out, "event: "...)
	out = append(out, name...)
	out = append(out, "\ndata: "...)
	out = append(out, data...)
	return append(out, "\n\n"...)
}

// pointsJSON encodes {"<metric>": [[<ms since the epoch>, <value>], ...]};
// NaN and ±Inf become null.
func pointsJSON(points map[string][]libmetricq.Point) []byte {
	out := make(map[string][][2]any, len(points))
	for name, pts := range points {
		rows := make([][2]any, len(pts))
		for i, p := range pts {
			rows[i] = [2]any{float64(p.Time) / 1e6, jsonFloat(p.Value)}
		}
		out[name] = rows
	}
	b, _ := json.Marshal(out)
	return b
}
