package amqpkit

import (
	"context"
	"encoding/json"
	"os"
	"time"
)

// ISOTime formats t as the reference's datetime.isoformat() of an aware UTC
// time: microseconds only when there are any.
func ISOTime(t time.Time) string {
	t = t.UTC()
	if t.Nanosecond()/1000 == 0 {
		return t.Format("2006-01-02T15:04:05+00:00")
	}
	return t.Format("2006-01-02T15:04:05.000000+00:00")
}

// Discover is the handler of the broadcast "discover": the reply of a client
// running since started, speaking metricqVersion ("libmetricq/<version>"),
// with the application's version when it gave one.
func Discover(started time.Time, metricqVersion, clientVersion string) Handler {
	return func(context.Context, map[string]json.RawMessage) (any, error) {
		now := time.Now()
		hostname, _ := os.Hostname()
		reply := map[string]any{
			"alive":          true,
			"currentTime":    ISOTime(now),
			"startingTime":   ISOTime(started),
			"uptime":         now.Sub(started).Nanoseconds(),
			"metricqVersion": metricqVersion,
			"hostname":       hostname,
		}
		if clientVersion != "" {
			reply["version"] = clientVersion
		}
		return reply, nil
	}
}
