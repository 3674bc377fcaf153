package testenv

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// FaultProxy is a TCP proxy on loopback between a source and the broker
// that breaks the network on demand the ways a real one breaks:
//
//   - stall: stop moving bytes in one or both directions while keeping
//     every socket open (no FIN, no RST), as a pulled cable, a dropped NAT
//     entry or a frozen VM do. Bytes in flight stay where they are; the
//     sender's buffers fill and its writes block.
//   - reset: send a reset to both ends, optionally in the middle of a frame.
//   - unreachable: reset everything and refuse new connections until told
//     otherwise.
//
// Each proxied connection is labelled "management" or "data" from the
// connection name the client sends in its handshake, so that the two can
// fail separately. Faults apply to the connections open when they are
// injected; connections made later pass, as after a reroute.
type FaultProxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu          sync.Mutex
	pairs       []*proxyPair
	unreachable bool
}

type proxyPair struct {
	client, broker *net.TCPConn
	label          string // "management", "data", or "" until known

	mu      sync.Mutex
	changed *sync.Cond
	stalled [2]bool // per direction (Up, Down)
	cutUp   bool    // reset after forwarding half of the next client read
	dead    bool
}

// Directions of a proxied connection.
const (
	Up   = 0 // client to broker
	Down = 1 // broker to client
)

// NewFaultProxy proxies to the broker of brokerURL and returns the proxy
// and brokerURL pointed at it.
func NewFaultProxy(t testing.TB, brokerURL string) (*FaultProxy, string) {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &FaultProxy{t: t, ln: ln, target: u.Host}
	go p.accept()
	t.Cleanup(p.close)
	u.Host = ln.Addr().String()
	return p, u.String()
}

func (p *FaultProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		client := c.(*net.TCPConn)
		// A small receive buffer (no autotuning) makes a stalled client's
		// writes block after a little data, as behind a dead route.
		_ = client.SetReadBuffer(64 * 1024)
		p.mu.Lock()
		refuse := p.unreachable
		p.mu.Unlock()
		if refuse {
			reset(client)
			continue
		}
		b, err := net.Dial("tcp", p.target)
		if err != nil {
			reset(client)
			continue
		}
		pair := &proxyPair{client: client, broker: b.(*net.TCPConn)}
		pair.changed = sync.NewCond(&pair.mu)
		p.mu.Lock()
		p.pairs = append(p.pairs, pair)
		p.mu.Unlock()
		go pair.forward(Up, client, pair.broker)
		go pair.forward(Down, pair.broker, client)
	}
}

// forward copies one direction. Stalled, it neither reads nor writes, so
// the bytes stay in the kernels' buffers. An end of stream is passed on as
// such; any other failure resets both ends.
func (pair *proxyPair) forward(dir int, from, to *net.TCPConn) {
	buf := make([]byte, 32*1024)
	var seen []byte // the start of the client's stream, for the label
	for {
		if !pair.waitFlowing(dir) {
			return
		}
		n, err := from.Read(buf)
		if n > 0 {
			if dir == Up && pair.labelled() == "" && len(seen) < 8192 {
				seen = append(seen, buf[:n]...)
				pair.learnLabel(seen)
			}
			if !pair.waitFlowing(dir) {
				return
			}
			chunk := buf[:n]
			if dir == Up && pair.takeCut() {
				_, _ = to.Write(chunk[:max(n/2, 1)])
				pair.kill()
				return
			}
			if _, werr := to.Write(chunk); werr != nil {
				pair.kill()
				return
			}
		}
		if errors.Is(err, io.EOF) {
			_ = to.CloseWrite()
			return
		}
		if err != nil {
			pair.kill()
			return
		}
	}
}

func (pair *proxyPair) waitFlowing(dir int) bool {
	pair.mu.Lock()
	defer pair.mu.Unlock()
	for pair.stalled[dir] && !pair.dead {
		pair.changed.Wait()
	}
	return !pair.dead
}

func (pair *proxyPair) labelled() string {
	pair.mu.Lock()
	defer pair.mu.Unlock()
	return pair.label
}

func (pair *proxyPair) learnLabel(start []byte) {
	for _, l := range []string{"management", "data"} {
		if bytes.Contains(start, []byte(l+" connection ")) {
			pair.mu.Lock()
			pair.label = l
			pair.mu.Unlock()
			return
		}
	}
}

func (pair *proxyPair) takeCut() bool {
	pair.mu.Lock()
	defer pair.mu.Unlock()
	cut := pair.cutUp
	pair.cutUp = false
	return cut
}

// kill resets both ends.
func (pair *proxyPair) kill() {
	pair.mu.Lock()
	pair.dead = true
	pair.changed.Broadcast()
	pair.mu.Unlock()
	reset(pair.client)
	reset(pair.broker)
}

// reset closes with a TCP reset rather than a FIN.
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// matching returns the live connections with the label (any for "").
func (p *FaultProxy) matching(label string) []*proxyPair {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*proxyPair
	for _, pair := range p.pairs {
		pair.mu.Lock()
		ok := !pair.dead && (label == "" || pair.label == label)
		pair.mu.Unlock()
		if ok {
			out = append(out, pair)
		}
	}
	return out
}

// Stall stops the given directions of the labelled connections; it
// returns how many connections it stalled.
func (p *FaultProxy) Stall(label string, dirs ...int) int {
	pairs := p.matching(label)
	for _, pair := range pairs {
		pair.mu.Lock()
		for _, d := range dirs {
			pair.stalled[d] = true
		}
		pair.changed.Broadcast()
		pair.mu.Unlock()
	}
	return len(pairs)
}

// ResetMidFrame makes the labelled connections forward half of the next
// bytes the client sends, then reset both ends.
func (p *FaultProxy) ResetMidFrame(label string) int {
	pairs := p.matching(label)
	for _, pair := range pairs {
		pair.mu.Lock()
		pair.cutUp = true
		pair.mu.Unlock()
	}
	return len(pairs)
}

// SetUnreachable resets every connection and refuses new ones, or lets
// them through again.
func (p *FaultProxy) SetUnreachable(on bool) {
	p.mu.Lock()
	p.unreachable = on
	p.mu.Unlock()
	if on {
		for _, pair := range p.matching("") {
			pair.kill()
		}
	}
}

func (p *FaultProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	pairs := p.pairs
	p.mu.Unlock()
	for _, pair := range pairs {
		pair.kill()
	}
}

// Connections counts the live connections with the label (any for "").
func (p *FaultProxy) Connections(label string) int { return len(p.matching(label)) }

// String lists the live connections, for failure messages.
func (p *FaultProxy) String() string {
	var labels []string
	for _, pair := range p.matching("") {
		labels = append(labels, pair.labelled())
	}
	return "proxy connections: " + strings.Join(labels, ", ")
}
