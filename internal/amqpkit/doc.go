// Package amqpkit is the AMQP toolkit shared by the MetricQ client
// (libmetricq) and the development manager: broker URLs and their TLS
// parameters, dialing, password redaction, the protocol's exchange names,
// RPCs matched by correlation id and the discover reply. It knows the
// MetricQ wire conventions but nothing of sources, sinks or managers.
//
// Its errors wrap the kinds below, which libmetricq exports under the same
// names, so errors.Is works the same on both sides.
package amqpkit
