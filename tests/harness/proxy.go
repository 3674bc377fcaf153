package harness

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
)

// Proxy forwards loopback TCP connections to the broker until Cut, which
// closes every connection and the listener: the broker is gone for good,
// as far as a source connected through the proxy can tell.
type Proxy struct {
	URL      string // the broker URL with the proxy's address
	listener net.Listener
	target   string

	mu    sync.Mutex
	conns []net.Conn
	cut   bool
}

// StartProxy starts a proxy in front of the broker of brokerURL; it is cut
// when the test ends.
func StartProxy(t testing.TB, brokerURL string) *Proxy {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "5672")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.Host = l.Addr().String()
	p := &Proxy{URL: u.String(), listener: l, target: target}
	go p.accept()
	t.Cleanup(p.Cut)
	return p
}

func (p *Proxy) accept() {
	for {
		client, err := p.listener.Accept()
		if err != nil {
			return
		}
		upstream, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			client.Close()
			upstream.Close()
			return
		}
		p.conns = append(p.conns, client, upstream)
		p.mu.Unlock()
		go pump(client, upstream)
		go pump(upstream, client)
	}
}

func pump(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// Cut closes every connection through the proxy and refuses new ones.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	p.listener.Close()
	for _, c := range conns {
		c.Close()
	}
}
