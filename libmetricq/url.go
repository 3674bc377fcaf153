package libmetricq

import (
	"fmt"
	"net/url"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
)

// parseBrokerURL checks an amqp:// or amqps:// URL. Errors never repeat the
// URL itself, because it may hold a password.
func parseBrokerURL(raw string) (amqp.URI, error) {
	uri, err := amqp.ParseURI(raw)
	if err != nil {
		return amqp.URI{}, fmt.Errorf("%w: broker URL %s: %v", ErrInvalid, RedactURL(raw), redactError(err, raw))
	}
	return uri, nil
}

// RedactURL replaces the password of a URL with "xxxxx" so that it can be
// logged. Text that does not parse as a URL is replaced as a whole.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}

// redactError removes any copy of the URL's password from an error text.
// It works on the raw text, because the URL in question may not parse.
func redactError(err error, rawURL string) string {
	text := err.Error()
	if pw := passwordOf(rawURL); pw != "" {
		text = strings.ReplaceAll(text, pw, "xxxxx")
		if unescaped, uerr := url.PathUnescape(pw); uerr == nil && unescaped != "" {
			text = strings.ReplaceAll(text, unescaped, "xxxxx")
		}
	}
	return text
}

// passwordOf finds the password in "scheme://user:password@host...".
func passwordOf(rawURL string) string {
	_, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return ""
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	_, pw, _ := strings.Cut(rest[:at], ":")
	return pw
}

// deriveDataURL turns the manager's dataServerAddress into the URL of the
// data connection, as the reference does: "vhost:<path>" keeps everything of
// the management URL but the vhost ("vhost:/" is "/", "vhost:/data" and
// "vhost:data" are "data"); any other address is used as given, with the
// management URL's credentials put in place of its own.
func deriveDataURL(managementURL, dataServerAddress string) (string, error) {
	mgmt, err := parseBrokerURL(managementURL)
	if err != nil {
		return "", err
	}
	if dataServerAddress == "" {
		return "", fmt.Errorf("%w: manager sent an empty dataServerAddress", ErrRPC)
	}
	if path, ok := strings.CutPrefix(dataServerAddress, "vhost:"); ok {
		vhost := strings.TrimPrefix(path, "/")
		if vhost == "" {
			vhost = "/"
		} else if vhost, err = url.PathUnescape(vhost); err != nil {
			return "", fmt.Errorf("%w: dataServerAddress %q: %v", ErrRPC, dataServerAddress, err)
		}
		mgmt.Vhost = vhost
		return mgmt.String(), nil
	}
	data, err := amqp.ParseURI(dataServerAddress)
	if err != nil {
		return "", fmt.Errorf("%w: dataServerAddress %s: %v", ErrRPC, RedactURL(dataServerAddress), err)
	}
	// amqp.ParseURI fills in guest/guest when a URL has none; the reference
	// takes the management URL's credentials, or none, which for RabbitMQ
	// means the same default.
	data.Username, data.Password = mgmt.Username, mgmt.Password
	return data.String(), nil
}
