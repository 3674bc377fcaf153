// Package libmetricq is a MetricQ Source client.
//
// A Source registers with the MetricQ manager over RabbitMQ (AMQP 0-9-1),
// declares its metrics with metadata and publishes DataChunks of
// delta-encoded nanosecond timestamps and float64 values. The API mirrors the
// reference Python package metricq (Source, IntervalSource), with stricter
// input checks and a delivery guarantee the reference lacks: chunks are
// published with publisher confirms and kept until the broker has confirmed
// them, and Stop flushes what is buffered.
//
// Connections that fail are restored with backoff (the data connection
// republishing every unconfirmed chunk in order, the management connection
// registering and declaring again); flow control and a full buffer show in
// Stats and the log; a connection that stays down for the reconnect timeout
// stops the source with ErrConnect. The only duplicates are whole chunks
// whose confirmation was lost with the connection. docs/reliability.md has
// the details, NewSource the TLS (amqps://) parameters.
//
// One Source serves its whole life: settings are Options, given to
// NewSource or, until Connect, to Configure; a Connect that fails (or is
// cancelled) leaves nothing behind, so it may simply be called again; Stop
// ends the Source for good.
//
// Send never touches the network: it appends to a per-metric buffer and hands
// whole chunks to a publisher goroutine, so it can be called at a high rate
// from many goroutines (or, through the C library, from many C threads).
// A program that sends to many metrics takes a Metric handle per metric
// once and sends through it, skipping the lookup by name:
//
//	power, err := src.Metric("node1.power")
//	...
//	err = power.Send(ctx, libmetricq.Now(), 42.5)
package libmetricq

// Version is the library version, reported in discover replies as
// "libmetricq/<Version>".
const Version = "0.1.0"

// LibraryName is the metricqVersion prefix other MetricQ tools display.
const LibraryName = "libmetricq"

// VersionString is what discover reports as metricqVersion.
const VersionString = LibraryName + "/" + Version
