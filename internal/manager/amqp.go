package manager

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// Dial opens one AMQP connection of the development tools, named name (as
// rabbitmqctl and the management UI show it). ctx bounds TCP connect, TLS
// and the AMQP handshake. Errors never contain the URL's password.
func Dial(ctx context.Context, rawURL, name string) (*amqp.Connection, error) {
	return amqpkit.Dial(ctx, rawURL, amqpkit.DialOptions{
		Name:      name,
		Heartbeat: libmetricq.DefaultHeartbeat,
		Product:   libmetricq.LibraryName,
		Version:   libmetricq.Version,
	})
}

// dataServerAddresses works out, from the management URL and a configured
// data address, the address the manager sends to clients and the URL it
// connects to itself (as metricq-manager does):
//   - "" means "vhost:<the management URL's vhost>";
//   - "vhost:<path>" is sent unchanged; the manager connects to the management
//     URL with that vhost;
//   - a full URL is sent without user and password; the manager connects to
//     it with its own credentials, or the management URL's when it has none.
func dataServerAddresses(managementURL, dataAddress string) (reply, connect string, err error) {
	mgmt, err := amqp.ParseURI(managementURL)
	if err != nil {
		return "", "", fmt.Errorf("management URL %s: %s", amqpkit.RedactURL(managementURL), amqpkit.RedactText(managementURL, err.Error()))
	}
	if dataAddress == "" {
		dataAddress = amqpkit.VhostAddress(mgmt.Vhost)
	}
	connect, err = amqpkit.DataURL(managementURL, dataAddress)
	if err != nil {
		return "", "", err
	}
	if strings.HasPrefix(dataAddress, "vhost:") {
		return dataAddress, connect, nil
	}
	u, err := url.Parse(dataAddress)
	if err != nil {
		return "", "", fmt.Errorf("data address %s: %v", amqpkit.RedactURL(dataAddress), err)
	}
	if u.User != nil {
		// Connect with the address's own credentials.
		connect = dataAddress
		u.User = nil
	}
	return u.String(), connect, nil
}
