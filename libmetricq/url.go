package libmetricq

import (
	"fmt"
	"net/url"
	"time"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
)

// The broker URL's query parameters are listed at NewSource; the toolkit
// (internal/amqpkit) parses them, for the source and the development
// manager alike.

// heartbeatFor settles a source's heartbeat from its option and its URL,
// which must not disagree.
func heartbeatFor(rawURL string, option time.Duration) (time.Duration, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return 0, fmt.Errorf("%w: broker URL %s", ErrInvalid, RedactURL(rawURL))
	}
	fromURL, given, err := amqpkit.HeartbeatOf(u.Query())
	switch {
	case err != nil:
		return 0, fmt.Errorf("%w: broker URL %s: %v", ErrInvalid, RedactURL(rawURL), err)
	case given && option != 0 && fromURL != option:
		return 0, fmt.Errorf("%w: heartbeat %v (option) and heartbeat=%d (URL) disagree: give one", ErrInvalid, option, fromURL/time.Second)
	case option != 0:
		return option, nil
	case given:
		return fromURL, nil
	}
	return DefaultHeartbeat, nil
}

// RedactURL replaces the password of a URL with "xxxxx" so that it can be
// logged. Text that does not parse as a URL is replaced as a whole.
func RedactURL(raw string) string { return amqpkit.RedactURL(raw) }

// DataURL turns the manager's dataServerAddress into the URL of the
// data connection, as the reference does: "vhost:<path>" keeps everything of
// the management URL but the vhost ("vhost:/" is "/", "vhost:/data" and
// "vhost:data" are "data"), its scheme and query (TLS parameters) included;
// any other address is used as given, with the management URL's credentials
// put in place of its own. When both are amqps:// and the address has no
// query, the management URL's CA, client certificate and verification
// settings carry over (and its server name too when the host is the same).
func DataURL(managementURL, dataServerAddress string) (string, error) {
	return amqpkit.DataURL(managementURL, dataServerAddress)
}
