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
// frame (9 s), and the broker drops a client it has not heard from within
// 2 to 3 intervals (at most 18 s), which also frees the source's exclusive
// queues for its reconnect. When only what the source sends is lost, that
// broker check (or, on Linux, the kernel's limit on unacknowledged data:
// 2 intervals) is what notices, so 3 intervals must stay well under 30 s,
// on a loaded machine too. The reference negotiates 60 s, which leaves a
// dead connection unnoticed for 90 s or more.
const DefaultHeartbeat = 6 * time.Second

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
