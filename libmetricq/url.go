package libmetricq

import (
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// URL query parameters. The TLS ones apply to amqps:// URLs only; an
// amqp:// URL that carries one is refused, so that a forgotten "s" never
// sends the password in clear text while the user believes TLS is on.
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
// heartbeat (whole seconds) is the source's heartbeat, as WithHeartbeat;
// heartbeat=0 leaves the interval to the broker (RabbitMQ: 60 s).
// Also accepted, with amqp091-go's meaning: connection_timeout (ms),
// channel_max, auth_mechanism (plain, amqplain, external). The names follow the RabbitMQ URI query parameter spec; the
// aliases cafile, server_name and no_verify_ssl are those of aiormq, which
// the Python reference uses. Other parameters are refused.
var (
	tlsQueryKeys   = []string{"cacertfile", "cafile", "certfile", "keyfile", "server_name_indication", "server_name", "verify", "no_verify_ssl"}
	otherQueryKeys = []string{"heartbeat", "connection_timeout", "channel_max", "auth_mechanism"}
)

// parseBrokerURL checks an amqp:// or amqps:// URL, its query parameters
// included. Errors never repeat the URL itself, because it may hold a
// password.
func parseBrokerURL(raw string) (amqp.URI, error) {
	uri, err := amqp.ParseURI(raw)
	if err != nil {
		return amqp.URI{}, fmt.Errorf("%w: broker URL %s: %v", ErrInvalid, RedactURL(raw), redactError(err, raw))
	}
	u, err := url.Parse(raw)
	if err != nil { // amqp.ParseURI parsed it already; keep the compiler happy
		return amqp.URI{}, fmt.Errorf("%w: broker URL %s: %v", ErrInvalid, RedactURL(raw), redactError(err, raw))
	}
	query := u.Query()
	keys := make([]string, 0, len(query))
	for k := range query {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch {
		case slices.Contains(tlsQueryKeys, k):
			if uri.Scheme != "amqps" {
				return amqp.URI{}, fmt.Errorf("%w: broker URL %s: TLS parameter %q needs an amqps:// URL", ErrInvalid, RedactURL(raw), k)
			}
		case slices.Contains(otherQueryKeys, k):
		default:
			return amqp.URI{}, fmt.Errorf("%w: broker URL %s: unknown query parameter %q (known: %s)", ErrInvalid, RedactURL(raw), k,
				strings.Join(append(slices.Clone(tlsQueryKeys), otherQueryKeys...), ", "))
		}
	}
	if _, _, err := heartbeatOf(query); err != nil {
		return amqp.URI{}, fmt.Errorf("%w: broker URL %s: %v", ErrInvalid, RedactURL(raw), err)
	}
	if uri.Scheme == "amqps" {
		if _, err := tlsParamsOf(u); err != nil {
			return amqp.URI{}, fmt.Errorf("%w: broker URL %s: %v", ErrInvalid, RedactURL(raw), err)
		}
	}
	return uri, nil
}

// heartbeatOf reads a URL's heartbeat parameter.
func heartbeatOf(query url.Values) (d time.Duration, given bool, err error) {
	if !query.Has("heartbeat") {
		return 0, false, nil
	}
	v := query.Get("heartbeat")
	seconds, err := strconv.ParseUint(v, 10, 16)
	if err != nil {
		return 0, true, fmt.Errorf("heartbeat=%q: want whole seconds from 0 to 65535", v)
	}
	return time.Duration(seconds) * time.Second, true, nil
}

// heartbeatFor settles a source's heartbeat from its option and its URL,
// which must not disagree.
func heartbeatFor(rawURL string, option time.Duration) (time.Duration, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return 0, fmt.Errorf("%w: broker URL %s", ErrInvalid, RedactURL(rawURL))
	}
	fromURL, given, err := heartbeatOf(u.Query())
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
	return redactText(err.Error(), rawURL)
}

func redactText(text, rawURL string) string {
	if rawURL != "" {
		// Errors from net/url quote the whole URL.
		text = strings.ReplaceAll(text, rawURL, RedactURL(rawURL))
	}
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
	if end := strings.IndexAny(rest, "/?#"); end >= 0 && strings.LastIndex(rest[:end], "@") >= 0 {
		rest = rest[:end]
	}
	at := strings.LastIndex(rest, "@")
	// An "@" in the query or fragment is not the end of a user part.
	if at < 0 || strings.ContainsAny(rest[:at], "?#") {
		return ""
	}
	_, pw, _ := strings.Cut(rest[:at], ":")
	return pw
}

// DataURL turns the manager's dataServerAddress into the URL of the
// data connection, as the reference does: "vhost:<path>" keeps everything of
// the management URL but the vhost ("vhost:/" is "/", "vhost:/data" and
// "vhost:data" are "data"), its scheme and query (TLS parameters) included;
// any other address is used as given, with the management URL's credentials
// put in place of its own. When both are amqps:// and the address has no
// query, the management URL's CA, client certificate and verification
// settings carry over (and its server name too when the host is the same).
func DataURL(managementURL, dataServerAddress string) (string, error) {
	if _, err := parseBrokerURL(managementURL); err != nil {
		return "", err
	}
	mgmt, err := url.Parse(managementURL)
	if err != nil {
		return "", fmt.Errorf("%w: broker URL %s", ErrInvalid, RedactURL(managementURL))
	}
	if dataServerAddress == "" {
		return "", fmt.Errorf("%w: manager sent an empty dataServerAddress", ErrRPC)
	}
	if path, ok := strings.CutPrefix(dataServerAddress, "vhost:"); ok {
		// As the reference (aiormq): the text is the vhost literally, but
		// for "%2F", which stands for "/".
		vhost := strings.TrimPrefix(path, "/")
		if vhost == "" {
			vhost = "/"
		} else {
			vhost = strings.ReplaceAll(strings.ReplaceAll(vhost, "%2F", "/"), "%2f", "/")
		}
		data := *mgmt
		if vhost == "/" {
			data.Path, data.RawPath = "/", ""
		} else {
			data.Path = "/" + vhost
			data.RawPath = "/" + url.PathEscape(vhost)
		}
		return data.String(), nil
	}
	if _, err := amqp.ParseURI(dataServerAddress); err != nil {
		return "", fmt.Errorf("%w: dataServerAddress %s: %v", ErrRPC, RedactURL(dataServerAddress), redactError(err, dataServerAddress))
	}
	data, err := url.Parse(dataServerAddress)
	if err != nil {
		return "", fmt.Errorf("%w: dataServerAddress %s", ErrRPC, RedactURL(dataServerAddress))
	}
	// The reference takes the management URL's credentials, or none, which
	// for RabbitMQ means guest/guest.
	data.User = mgmt.User
	if data.Scheme == "amqps" && mgmt.Scheme == "amqps" && data.RawQuery == "" {
		q := url.Values{}
		for key, values := range mgmt.Query() {
			if !slices.Contains(tlsQueryKeys, key) {
				continue
			}
			if (key == "server_name_indication" || key == "server_name") && data.Hostname() != mgmt.Hostname() {
				continue
			}
			q[key] = values
		}
		data.RawQuery = q.Encode()
	}
	out := data.String()
	if _, err := parseBrokerURL(out); err != nil {
		return "", fmt.Errorf("%w: dataServerAddress %s: %v", ErrRPC, RedactURL(dataServerAddress), err)
	}
	return out, nil
}
