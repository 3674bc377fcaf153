package libmetricq

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
)

// MaxNameLength is the AMQP short-string limit for routing keys, in bytes.
const MaxNameLength = 255

// ValidateMetricName applies the hard rules for metric names: non-empty, at
// most 255 bytes of valid UTF-8 (an AMQP routing key), no "*" or "#" (sink
// bindings treat them as wildcards, so such a metric could not be subscribed
// to exactly), no NUL byte, and no leading "_" (the manager's CouchDB refuses such
// document ids). The recommended dotted pattern is policy, not checked.
func ValidateMetricName(name string) error {
	why := ""
	switch {
	case name == "":
		why = "empty"
	case len(name) > MaxNameLength:
		why = fmt.Sprintf("%d bytes, at most %d allowed", len(name), MaxNameLength)
	case !utf8.ValidString(name):
		why = "not valid UTF-8"
	case strings.ContainsAny(name, "*#"):
		why = `contains "*" or "#", which are AMQP wildcards`
	case strings.ContainsRune(name, 0):
		why = "contains a NUL byte, which no C caller could send"
	case name[0] == '_':
		why = `starts with "_", which MetricQ reserves`
	default:
		return nil
	}
	return &MetricError{Metric: printableName(name), Err: fmt.Errorf("%w: bad metric name: %s", ErrInvalid, why)}
}

// printableName keeps error texts readable and bounded whatever the input.
func printableName(name string) string { return amqpkit.PrintableText(name, 80) }

// validateToken checks a client token: it names the "<token>-rpc" queue, so
// the same byte limit applies.
func validateToken(token string) error {
	switch {
	case token == "":
		return fmt.Errorf("%w: empty token", ErrInvalid)
	case !utf8.ValidString(token):
		return fmt.Errorf("%w: token is not valid UTF-8", ErrInvalid)
	case len(token)+len("-rpc") > MaxNameLength:
		return fmt.Errorf("%w: token is %d bytes, at most %d allowed", ErrInvalid, len(token), MaxNameLength-len("-rpc"))
	}
	return nil
}
