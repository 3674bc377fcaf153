package libmetricq

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultHeartbeat is the AMQP heartbeat a source asks for unless told
// otherwise (WithHeartbeat, or heartbeat= in the URL). It bounds how long a
// silent peer (a pulled cable, a dropped NAT entry, a frozen VM) goes
// unnoticed: amqp091-go gives up reading after 1.5 intervals without a
// frame, and the broker drops a client after about 2 missed intervals, which
// frees the source's exclusive queues for its reconnect. 10 s keeps both
// well under 30 s. The reference negotiates 60 s, which leaves a dead
// connection unnoticed for 90 s or more.
const DefaultHeartbeat = 10 * time.Second

// connSettings are what every connection of a source is dialled with.
type connSettings struct {
	tls       *tls.Config   // base TLS configuration (WithTLSConfig), or nil
	heartbeat time.Duration // asked of the broker, which may lower it
}

// defaultDialTimeout bounds a connection attempt when the caller's context
// has no deadline.
const defaultDialTimeout = 30 * time.Second

// closeTimeout bounds closing a connection: the close handshake waits this
// long for the broker before the socket is dropped.
const closeTimeout = 2 * time.Second

// tlsParams are the TLS settings from an amqps:// URL's query (see the
// parameter list in url.go).
type tlsParams struct {
	caFile, certFile, keyFile, serverName string
	noVerify                              bool
}

func tlsParamsOf(u *url.URL) (tlsParams, error) {
	q := u.Query()
	first := func(keys ...string) string {
		for _, k := range keys {
			if v := q.Get(k); v != "" {
				return v
			}
		}
		return ""
	}
	p := tlsParams{
		caFile:     first("cacertfile", "cafile"),
		certFile:   q.Get("certfile"),
		keyFile:    q.Get("keyfile"),
		serverName: first("server_name_indication", "server_name"),
	}
	switch v := q.Get("verify"); v {
	case "", "verify_peer":
	case "verify_none":
		p.noVerify = true
	default:
		return p, fmt.Errorf("verify=%q: want verify_peer or verify_none", v)
	}
	switch v := q.Get("no_verify_ssl"); v {
	case "", "0", "false":
	case "1", "true":
		p.noVerify = true
	default:
		return p, fmt.Errorf("no_verify_ssl=%q: want 0 or 1", v)
	}
	if (p.certFile == "") != (p.keyFile == "") {
		return p, errors.New("certfile and keyfile go together: give both or neither")
	}
	return p, nil
}

// tlsConfigFor builds the TLS configuration of an amqps:// URL: the user's
// base configuration (WithTLSConfig) when there is one, else the URL's
// parameters, read from disk on every call so that renewed certificates
// are picked up on the next reconnect. Verification is on unless turned
// off explicitly.
func tlsConfigFor(rawURL string, base *tls.Config) (*tls.Config, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: broker URL %s", ErrInvalid, RedactURL(rawURL))
	}
	if base != nil {
		c := base.Clone()
		if c.ServerName == "" {
			c.ServerName = u.Hostname()
		}
		return c, nil
	}
	p, err := tlsParamsOf(u)
	if err != nil {
		return nil, err
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname(), InsecureSkipVerify: p.noVerify}
	if p.serverName != "" {
		c.ServerName = p.serverName
	}
	if p.caFile != "" {
		pem, err := os.ReadFile(p.caFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", p.caFile)
		}
		c.RootCAs = pool
	}
	if p.certFile != "" {
		cert, err := tls.LoadX509KeyPair(p.certFile, p.keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s / key %s: %w", p.certFile, p.keyFile, err)
		}
		// Always sent when the broker asks for one, even if its list of
		// acceptable CAs does not name the issuer (Go would send none then,
		// and a login with SASL EXTERNAL would fail without saying why).
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return c, nil
}

// tlsVerificationOff tells whether an amqps:// URL turns the checks off.
func tlsVerificationOff(rawURL string, base *tls.Config) bool {
	if base != nil {
		return base.InsecureSkipVerify
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "amqps" {
		return false
	}
	p, err := tlsParamsOf(u)
	return err == nil && p.noVerify
}

// dial opens one AMQP connection named connectionName (the name RabbitMQ's
// management UI and rabbitmqctl show), giving up when ctx ends. TCP connect,
// TLS and the AMQP handshake all count against ctx. Errors wrap ErrConnect
// and never hold the password.
func dial(ctx context.Context, rawURL, connectionName string, settings connSettings) (*amqp.Connection, error) {
	uri, err := parseBrokerURL(rawURL)
	if err != nil {
		return nil, err
	}
	fail := func(err error) error {
		return fmt.Errorf("%w: %s to %s: %s", ErrConnect, connectionName, RedactURL(rawURL), redactText(err.Error(), rawURL))
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultDialTimeout)
	}
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(connectionName)
	props["product"] = LibraryName
	props["version"] = Version
	props["platform"] = runtime.Version()
	cfg := amqp.Config{
		Heartbeat:  settings.heartbeat,
		Properties: props,
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Deadline: deadline}
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Bounds the TLS and AMQP handshakes; amqp091 clears it after.
			if err := conn.SetDeadline(deadline); err != nil {
				conn.Close()
				return nil, err
			}
			return conn, nil
		},
	}
	if uri.Scheme == "amqps" {
		tlsConfig, err := tlsConfigFor(rawURL, settings.tls)
		if err != nil {
			return nil, fail(fmt.Errorf("TLS setup: %w", err))
		}
		cfg.TLSClientConfig = tlsConfig
	}
	conn, err := amqp.DialConfig(rawURL, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %s to %s: %w", ErrConnect, connectionName, RedactURL(rawURL), ctx.Err())
		}
		err = explainTLS(err, cfg.TLSClientConfig)
		// The socket deadline may fire just before ctx's timer, and amqp091
		// turns some I/O errors into *amqp.Error text.
		var netErr net.Error
		if (errors.As(err, &netErr) && netErr.Timeout()) || !time.Now().Before(deadline) || strings.Contains(err.Error(), "i/o timeout") {
			return nil, fmt.Errorf("%w: %s to %s: %s: %w", ErrConnect, connectionName, RedactURL(rawURL), redactError(err, rawURL), context.DeadlineExceeded)
		}
		return nil, fail(err)
	}
	return conn, nil
}

// explainTLS adds a hint to certificate errors.
func explainTLS(err error, tlsConfig *tls.Config) error {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Errorf("TLS: %w (the broker's certificate is not signed by a CA in cacertfile or, without it, the system trust store)", err)
	case errors.As(err, &hostname):
		return fmt.Errorf("TLS: %w (the certificate does not name the host connected to; use the name it holds, or server_name_indication=<name>)", err)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return fmt.Errorf("TLS: %w (the broker's certificate has expired or is not valid yet; check it and this host's clock)", err)
	case errors.As(err, &verify):
		return fmt.Errorf("TLS: %w", err)
	}
	var recordErr tls.RecordHeaderError
	if errors.As(err, &recordErr) {
		return fmt.Errorf("TLS: %w (is this port a TLS listener? amqps:// defaults to 5671)", err)
	}
	var alert tls.AlertError
	if errors.As(err, &alert) || strings.Contains(err.Error(), "remote error: tls:") {
		// amqp091 turns alerts read after the handshake into frame errors.
		return fmt.Errorf("%w (the broker refused the TLS connection: check the client certificate, if any)", err)
	}
	if tlsConfig != nil && tlsConfig.GetClientCertificate != nil &&
		(errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, amqp.ErrClosed)) {
		return fmt.Errorf("%w (the broker closed the connection right after the TLS handshake: did it refuse the client certificate?)", err)
	}
	return err
}

// closeConn closes a connection, waiting at most closeTimeout for the
// broker's answer. It never blocks longer, even when the broker stopped
// reading (flow control) or the network is gone.
func closeConn(conn *amqp.Connection) {
	if conn == nil {
		return
	}
	_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
}
