package libmetricq

import (
	"context"
	"crypto/tls"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
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

// dial opens one of a source's connections, named connectionName (the name
// RabbitMQ's management UI and rabbitmqctl show), giving up when ctx ends.
// Errors wrap ErrConnect and never hold the password.
func dial(ctx context.Context, rawURL, connectionName string, settings connSettings) (*amqp.Connection, error) {
	return amqpkit.Dial(ctx, rawURL, amqpkit.DialOptions{
		Name:      connectionName,
		TLS:       settings.tls,
		Heartbeat: settings.heartbeat,
		Product:   LibraryName,
		Version:   Version,
	})
}
