package manager

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/libmetricq"
)

// defaultDialTimeout bounds a connection attempt when ctx has no deadline.
const defaultDialTimeout = 30 * time.Second

// dial opens one AMQP connection named name (as rabbitmqctl and the
// management UI show it). ctx bounds TCP connect, TLS and the AMQP handshake.
// Errors never contain the URL's password.
func dial(ctx context.Context, rawURL, name string) (*amqp.Connection, error) {
	if _, err := amqp.ParseURI(rawURL); err != nil {
		return nil, fmt.Errorf("broker URL %s: %s", libmetricq.RedactURL(rawURL), redact(err, rawURL))
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultDialTimeout)
	}
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(name)
	props["product"] = libmetricq.LibraryName
	props["version"] = libmetricq.Version
	cfg := amqp.Config{
		Heartbeat:  60 * time.Second,
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
			return nil, fmt.Errorf("connect to %s: %w", libmetricq.RedactURL(rawURL), ctx.Err())
		}
		return nil, fmt.Errorf("connect to %s: %s", libmetricq.RedactURL(rawURL), redact(err, rawURL))
	}
	return conn, nil
}

// redact returns err's text with any copy of rawURL's password replaced.
func redact(err error, rawURL string) string {
	text := err.Error()
	if u, perr := url.Parse(rawURL); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			text = strings.ReplaceAll(text, pw, "xxxxx")
			text = strings.ReplaceAll(text, url.QueryEscape(pw), "xxxxx")
		}
	}
	return text
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
		return "", "", fmt.Errorf("management URL %s: %s", libmetricq.RedactURL(managementURL), redact(err, managementURL))
	}
	if dataAddress == "" {
		dataAddress = vhostAddress(mgmt.Vhost)
	}
	connect, err = libmetricq.DataURL(managementURL, dataAddress)
	if err != nil {
		return "", "", err
	}
	if strings.HasPrefix(dataAddress, "vhost:") {
		return dataAddress, connect, nil
	}
	u, err := url.Parse(dataAddress)
	if err != nil {
		return "", "", fmt.Errorf("data address %s: %v", libmetricq.RedactURL(dataAddress), err)
	}
	if u.User != nil {
		// Connect with the address's own credentials.
		connect = dataAddress
		u.User = nil
	}
	return u.String(), connect, nil
}

// vhostAddress is the "vhost:" form of a vhost name.
func vhostAddress(vhost string) string {
	if vhost == "" || vhost == "/" {
		return "vhost:/"
	}
	// Clients read the text literally (as aiormq does), "%2F" meaning "/".
	return "vhost:" + strings.ReplaceAll(vhost, "/", "%2F")
}
