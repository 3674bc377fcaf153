package amqpkit

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"syscall"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The TLS query parameters of a broker URL. They apply to amqps:// URLs
// only; an amqp:// URL that carries one is refused, so that a forgotten "s"
// never sends the password in clear text while the user believes TLS is on.
//
//	cacertfile, cafile            PEM file with the CA certificate(s) that sign
//	                              the broker's certificate (default: the
//	                              system's trust store)
//	certfile, keyfile             PEM client certificate and its private key
//	                              (both or neither), for brokers that ask
//	                              for one (verify_peer) or SASL EXTERNAL
//	server_name_indication,       the host name sent as SNI and checked
//	server_name                   against the certificate (default: the
//	                              URL's host)
//	verify=verify_none,           turn certificate and host-name checks off
//	no_verify_ssl=1               (logged as a warning; never do this in
//	                              production)
//
// The names follow the RabbitMQ URI query parameter spec; the aliases
// cafile, server_name and no_verify_ssl are those of aiormq, which the
// Python reference uses.
var tlsQueryKeys = []string{"cacertfile", "cafile", "certfile", "keyfile", "server_name_indication", "server_name", "verify", "no_verify_ssl"}

// tlsParams are the TLS settings from an amqps:// URL's query.
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

// TLSConfig builds the TLS configuration of an amqps:// URL: base (the
// user's own configuration) when there is one, else the URL's parameters,
// read from disk on every call so that renewed certificates are picked up
// on the next reconnect. Verification is on unless turned off explicitly.
func TLSConfig(rawURL string, base *tls.Config) (*tls.Config, error) {
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

// TLSVerificationOff tells whether an amqps:// URL (or base) turns the
// checks off.
func TLSVerificationOff(rawURL string, base *tls.Config) bool {
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
