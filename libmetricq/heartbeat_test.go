package libmetricq_test

import (
	"strings"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// Both connections negotiate the heartbeat asked for: the default, the
// option's, or the URL's.
func TestHeartbeatNegotiated(t *testing.T) {
	startManager(t, manager.Config{})
	api := testenv.ManagementAPI(t)
	cases := []struct {
		name  string
		query string
		opts  []libmetricq.Option
		want  time.Duration
	}{
		{"default", "", nil, libmetricq.DefaultHeartbeat},
		{"option", "", []libmetricq.Option{libmetricq.WithHeartbeat(3 * time.Second)}, 3 * time.Second},
		{"url", "heartbeat=4", nil, 4 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			token := testenv.Token(t, "source")
			connectURL(t, withQuery(testenv.URL(t), c.query), token, c.opts...)
			waitUntil(t, 20*time.Second, "both connections listed with their heartbeat", func() bool {
				found := 0
				for _, conn := range api.Connections(t) {
					if name := conn.ClientName(); name == "management connection "+token || name == "data connection "+token {
						if time.Duration(conn.Heartbeat)*time.Second != c.want {
							t.Fatalf("%s negotiated %d s, want %v", name, conn.Heartbeat, c.want)
						}
						found++
					}
				}
				return found == 2
			})
		})
	}
}

// withQuery adds query parameters to a URL.
func withQuery(url, query string) string {
	switch {
	case query == "":
		return url
	case strings.Contains(url, "?"):
		return url + "&" + query
	}
	return url + "?" + query
}
