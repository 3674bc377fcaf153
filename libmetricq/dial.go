package libmetricq

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// heartbeat matches the reference, which always negotiates 60 s.
const heartbeat = 60 * time.Second

// defaultDialTimeout bounds a connection attempt when the caller's context
// has no deadline.
const defaultDialTimeout = 30 * time.Second

// dial opens one AMQP connection named connectionName (the name RabbitMQ's
// management UI and rabbitmqctl show), giving up when ctx ends. TCP connect,
// TLS and the AMQP handshake all count against ctx.
func dial(ctx context.Context, rawURL, connectionName string) (*amqp.Connection, error) {
	if _, err := parseBrokerURL(rawURL); err != nil {
		return nil, err
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
		Heartbeat:  heartbeat,
		Properties: props,
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Deadline: deadline}
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// amqp091 clears the deadline once the handshake is done.
			if err := conn.SetDeadline(deadline); err != nil {
				conn.Close()
				return nil, err
			}
			return conn, nil
		},
	}
	conn, err := amqp.DialConfig(rawURL, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %s to %s: %w", ErrConnect, connectionName, RedactURL(rawURL), ctx.Err())
		}
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			return nil, fmt.Errorf("%w: %s to %s: %s: %w", ErrConnect, connectionName, RedactURL(rawURL), redactError(err, rawURL), context.DeadlineExceeded)
		}
		return nil, fmt.Errorf("%w: %s to %s: %s", ErrConnect, connectionName, RedactURL(rawURL), redactError(err, rawURL))
	}
	return conn, nil
}
