package amqpkit

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

// URL query parameters besides the TLS ones (tls.go): heartbeat (whole
// seconds, read by HeartbeatOf; 0 leaves the interval to the broker) and,
// with amqp091-go's meaning, connection_timeout (ms), channel_max,
// auth_mechanism (plain, amqplain, external). Other parameters are refused.
var otherQueryKeys = []string{"heartbeat", "connection_timeout", "channel_max", "auth_mechanism"}

// ParseURL checks an amqp:// or amqps:// URL, its query parameters
// included. Errors wrap ErrInvalid and never repeat the URL itself, because
// it may hold a password.
func ParseURL(raw string) (amqp.URI, error) {
	uri, err := amqp.ParseURI(raw)
	if err != nil {
		return amqp.URI{}, fmt.Errorf("%w: broker URL %s: %v", ErrInvalid, RedactURL(raw), RedactText(raw, err.Error()))
	}
	u, err := url.Parse(raw)
	if err != nil { // amqp.ParseURI parsed it already; keep the compiler happy
		return amqp.URI{}, fmt.Errorf("%w: broker URL %s: %v", ErrInvalid, RedactURL(raw), RedactText(raw, err.Error()))
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
	if _, _, err := HeartbeatOf(query); err != nil {
		return amqp.URI{}, fmt.Errorf("%w: broker URL %s: %v", ErrInvalid, RedactURL(raw), err)
	}
	if uri.Scheme == "amqps" {
		if _, err := tlsParamsOf(u); err != nil {
			return amqp.URI{}, fmt.Errorf("%w: broker URL %s: %v", ErrInvalid, RedactURL(raw), err)
		}
	}
	return uri, nil
}

// HeartbeatOf reads a URL's heartbeat parameter.
func HeartbeatOf(query url.Values) (d time.Duration, given bool, err error) {
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

// DataURL turns the manager's dataServerAddress into the URL of the
// data connection, as the reference does: "vhost:<path>" keeps everything of
// the management URL but the vhost ("vhost:/" is "/", "vhost:/data" and
// "vhost:data" are "data"), its scheme and query (TLS parameters) included;
// any other address is used as given, with the management URL's credentials
// put in place of its own. When both are amqps:// and the address has no
// query, the management URL's CA, client certificate and verification
// settings carry over (and its server name too when the host is the same).
func DataURL(managementURL, dataServerAddress string) (string, error) {
	if _, err := ParseURL(managementURL); err != nil {
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
		return "", fmt.Errorf("%w: dataServerAddress %s: %v", ErrRPC, RedactURL(dataServerAddress), RedactText(dataServerAddress, err.Error()))
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
	if _, err := ParseURL(out); err != nil {
		return "", fmt.Errorf("%w: dataServerAddress %s: %v", ErrRPC, RedactURL(dataServerAddress), err)
	}
	return out, nil
}

// VhostAddress is the "vhost:" form of a vhost name, as a manager sends it
// as dataServerAddress.
func VhostAddress(vhost string) string {
	if vhost == "" || vhost == "/" {
		return "vhost:/"
	}
	// Clients read the text literally (as aiormq does), "%2F" meaning "/".
	return "vhost:" + strings.ReplaceAll(vhost, "/", "%2F")
}
