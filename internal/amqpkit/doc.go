// Package amqpkit is the AMQP toolkit shared by the MetricQ client
// (libmetricq) and the development manager (internal/manager,
// cmd/metricq-manager): broker URLs and their TLS parameters (url.go,
// tls.go), dialing, where every socket is made (dial.go), password
// redaction (redact.go), the protocol's exchange and queue names
// (names.go), RPCs matched to their replies by correlation id (Calls), a
// client's end of the management protocol (Endpoint: its "<token>-rpc"
// queue, calls out, requests served by handlers) and the discover reply.
// It knows the MetricQ wire conventions but nothing of sources, sinks or
// managers.
//
// Its errors wrap the kinds in errors.go, which libmetricq exports under
// the same names, so errors.Is works the same on both sides.
package amqpkit
