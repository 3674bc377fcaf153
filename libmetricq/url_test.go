package libmetricq

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/libmetricq/libmetricq/internal/amqpkit"
)

func TestDeriveDataURL(t *testing.T) {
	type want struct {
		scheme, host, user, pass, vhost string
		port                            int
	}
	cases := []struct {
		mgmt, address string
		want          want
	}{
		{"amqp://admin:secret@rabbit:5672/", "vhost:/", want{"amqp", "rabbit", "admin", "secret", "/", 5672}},
		{"amqp://admin:secret@rabbit/mgmt", "vhost:/data", want{"amqp", "rabbit", "admin", "secret", "data", 5672}},
		{"amqp://admin:secret@rabbit/mgmt", "vhost:data", want{"amqp", "rabbit", "admin", "secret", "data", 5672}},
		{"amqp://admin:secret@rabbit/", "vhost:%2Fodd", want{"amqp", "rabbit", "admin", "secret", "/odd", 5672}},
		// Literal, as aiormq reads it: only %2F is decoded.
		{"amqp://admin:secret@rabbit/", "vhost:x y", want{"amqp", "rabbit", "admin", "secret", "x y", 5672}},
		{"amqp://admin:secret@rabbit/", "vhost:a%20b", want{"amqp", "rabbit", "admin", "secret", "a%20b", 5672}},
		{"amqps://admin:secret@rabbit/", "vhost:/", want{"amqps", "rabbit", "admin", "secret", "/", 5671}},
		{"amqp://admin:secret@rabbit/", "amqp://other:9999/data", want{"amqp", "other", "admin", "secret", "data", 9999}},
		{"amqp://admin:secret@rabbit/", "amqp://intruder:pw@other/", want{"amqp", "other", "admin", "secret", "/", 5672}},
		{"amqp://admin:secret@rabbit/", "amqps://other/", want{"amqps", "other", "admin", "secret", "/", 5671}},
	}
	for _, c := range cases {
		got, err := DataURL(c.mgmt, c.address)
		if err != nil {
			t.Errorf("%s + %s: %v", c.mgmt, c.address, err)
			continue
		}
		u, err := amqp.ParseURI(got)
		if err != nil {
			t.Errorf("%s + %s gave unparsable %q", c.mgmt, c.address, got)
			continue
		}
		g := want{u.Scheme, u.Host, u.Username, u.Password, u.Vhost, u.Port}
		if g != c.want {
			t.Errorf("%s + %s = %+v, want %+v", c.mgmt, c.address, g, c.want)
		}
	}
	for _, bad := range []string{"", "http://x/", "amqp://[::1"} {
		if _, err := DataURL("amqp://u:p@h/", bad); !errors.Is(err, ErrRPC) {
			t.Errorf("address %q: want ErrRPC, got %v", bad, err)
		}
	}
}

func TestDeriveDataURLKeepsTLSParameters(t *testing.T) {
	mgmt := "amqps://admin:s3cret@rabbit:5671/mgmt?cacertfile=%2Fca.pem&server_name_indication=rabbit.example&certfile=%2Fc.pem&keyfile=%2Fc.key"
	cases := map[string]map[string]string{
		// vhost: everything carries over.
		"vhost:/data": {"cacertfile": "/ca.pem", "server_name_indication": "rabbit.example", "certfile": "/c.pem", "keyfile": "/c.key"},
		// Another amqps host: the CA and client certificate, not the name.
		"amqps://other:5671/data": {"cacertfile": "/ca.pem", "certfile": "/c.pem", "keyfile": "/c.key", "server_name_indication": ""},
		// The same host: the name too.
		"amqps://rabbit/data": {"cacertfile": "/ca.pem", "server_name_indication": "rabbit.example"},
		// An address with its own query keeps it.
		"amqps://other/data?cafile=%2Fother.pem": {"cafile": "/other.pem", "cacertfile": ""},
		// Plain amqp: nothing of TLS.
		"amqp://other/data": {"cacertfile": ""},
	}
	for address, want := range cases {
		got, err := DataURL(mgmt, address)
		if err != nil {
			t.Errorf("%s: %v", address, err)
			continue
		}
		u, err := url.Parse(got)
		if err != nil {
			t.Fatal(err)
		}
		if pw, _ := u.User.Password(); pw != "s3cret" {
			t.Errorf("%s: credentials not carried over: %s", address, RedactURL(got))
		}
		for k, v := range want {
			if u.Query().Get(k) != v {
				t.Errorf("%s: %s=%q in %s, want %q", address, k, u.Query().Get(k), RedactURL(got), v)
			}
		}
	}
	if got, _ := DataURL(mgmt, "vhost:/data"); !strings.HasPrefix(got, "amqps://admin:s3cret@rabbit:5671/data?") {
		t.Errorf("vhost: %s", RedactURL(got))
	}
}

func TestHeartbeatSetting(t *testing.T) {
	good := []struct {
		url    string
		option time.Duration
		want   time.Duration
	}{
		{"amqp://h/", 0, DefaultHeartbeat},
		{"amqp://h/?heartbeat=3", 0, 3 * time.Second},
		{"amqp://h/?heartbeat=0", 0, 0},
		{"amqp://h/", 7 * time.Second, 7 * time.Second},
		{"amqp://h/?heartbeat=7", 7 * time.Second, 7 * time.Second},
	}
	for _, c := range good {
		got, err := heartbeatFor(c.url, c.option)
		if err != nil || got != c.want {
			t.Errorf("%s with option %v: %v, %v; want %v", c.url, c.option, got, err, c.want)
		}
	}
	for _, raw := range []string{"amqp://u:hunter2@h/?heartbeat=x", "amqp://u:hunter2@h/?heartbeat=-1", "amqp://u:hunter2@h/?heartbeat=70000", "amqp://u:hunter2@h/?heartbeat=1.5"} {
		_, err := amqpkit.ParseURL(raw)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "heartbeat") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: want ErrInvalid naming heartbeat, got %v", RedactURL(raw), err)
		}
	}
	if _, err := heartbeatFor("amqp://h/?heartbeat=5", 6*time.Second); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "disagree") {
		t.Errorf("option and URL disagreeing: %v", err)
	}
	for _, d := range []time.Duration{0, 500 * time.Millisecond, 1500 * time.Millisecond, 65536 * time.Second, -time.Second} {
		if _, err := NewSource("amqp://h/", "tok", WithHeartbeat(d)); !errors.Is(err, ErrInvalid) {
			t.Errorf("WithHeartbeat(%v): want ErrInvalid, got %v", d, err)
		}
	}
}
