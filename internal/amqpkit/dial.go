package amqpkit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultDialTimeout bounds a connection attempt when the caller's context
// has no deadline.
const DefaultDialTimeout = 30 * time.Second

// CloseTimeout bounds closing a connection: the close handshake waits this
// long for the broker before the socket is dropped.
const CloseTimeout = 2 * time.Second

// DialOptions say how to connect and who connects.
type DialOptions struct {
	// Name is the connection's name, as RabbitMQ's management UI and
	// rabbitmqctl show it.
	Name string
	// TLS, for amqps:// URLs, replaces the TLS settings of the URL's query.
	TLS *tls.Config
	// Product and Version are the client properties the broker shows.
	Product, Version string
	// Heartbeat is the interval asked of the broker, which may lower it; 0
	// leaves it to the broker.
	Heartbeat time.Duration
}

// Dial opens one AMQP connection, giving up when ctx ends. TCP connect, TLS
// and the AMQP handshake all count against ctx. Errors wrap ErrConnect (or
// ErrInvalid for a bad URL) and never hold the password.
func Dial(ctx context.Context, rawURL string, o DialOptions) (*amqp.Connection, error) {
	uri, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	fail := func(err error) error {
		return fmt.Errorf("%w: %s to %s: %s", ErrConnect, o.Name, RedactURL(rawURL), RedactText(rawURL, err.Error()))
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(DefaultDialTimeout)
	}
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(o.Name)
	props["product"] = o.Product
	props["version"] = o.Version
	props["platform"] = runtime.Version()
	// A cancelled ctx ends the TLS and AMQP handshakes at once (its
	// deadline alone bounds them otherwise), so that a cancelled connect
	// returns now and leaves no connection behind.
	var unwatch func() bool
	open := openSocket(ctx, deadline, writeTimeoutFor(o.Heartbeat))
	cfg := amqp.Config{
		Heartbeat:  o.Heartbeat,
		Properties: props,
		Dial: func(network, addr string) (net.Conn, error) {
			conn, err := open(network, addr)
			if err == nil {
				unwatch = context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
			}
			return conn, err
		},
	}
	if uri.Scheme == "amqps" {
		tlsConfig, err := TLSConfig(rawURL, o.TLS)
		if err != nil {
			return nil, fail(fmt.Errorf("TLS setup: %w", err))
		}
		cfg.TLSClientConfig = tlsConfig
	}
	conn, err := amqp.DialConfig(rawURL, cfg)
	if unwatch != nil && !unwatch() && err == nil {
		// Cancelled just as the handshake ended: the past deadline may
		// have hit the open connection.
		Close(conn)
		conn, err = nil, ctx.Err()
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %s to %s: %w", ErrConnect, o.Name, RedactURL(rawURL), ctx.Err())
		}
		err = explainTLS(err, cfg.TLSClientConfig)
		// The socket deadline may fire just before ctx's timer, and amqp091
		// turns some I/O errors into *amqp.Error text.
		var netErr net.Error
		if (errors.As(err, &netErr) && netErr.Timeout()) || !time.Now().Before(deadline) || strings.Contains(err.Error(), "i/o timeout") {
			return nil, fmt.Errorf("%w: %s to %s: %s: %w", ErrConnect, o.Name, RedactURL(rawURL), RedactText(rawURL, err.Error()), context.DeadlineExceeded)
		}
		return nil, fail(err)
	}
	return conn, nil
}

// openSocket is where every AMQP connection of the project gets its TCP
// socket (amqp091 runs TLS over it): anything the socket needs for its
// whole life belongs here.
func openSocket(ctx context.Context, deadline time.Time, writeTimeout time.Duration) func(network, addr string) (net.Conn, error) {
	return func(network, addr string) (net.Conn, error) {
		d := net.Dialer{Deadline: deadline, Control: giveUpUnacknowledged(writeTimeout)}
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		watched := &deadlineConn{Conn: conn, writeTimeout: writeTimeout}
		// Bounds the TLS and AMQP handshakes; amqp091 clears it after.
		if err := watched.SetDeadline(deadline); err != nil {
			conn.Close()
			return nil, err
		}
		return watched, nil
	}
}

// Close closes a connection, waiting at most CloseTimeout for the broker's
// answer. It never blocks longer, even when the broker stopped reading
// (flow control) or the network is gone.
func Close(conn *amqp.Connection) {
	if conn == nil {
		return
	}
	_ = conn.CloseDeadline(time.Now().Add(CloseTimeout))
}
