package libmetricq

import (
	"errors"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
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
		{"amqps://admin:secret@rabbit/", "vhost:/", want{"amqps", "rabbit", "admin", "secret", "/", 5671}},
		{"amqp://admin:secret@rabbit/", "amqp://other:9999/data", want{"amqp", "other", "admin", "secret", "data", 9999}},
		{"amqp://admin:secret@rabbit/", "amqp://intruder:pw@other/", want{"amqp", "other", "admin", "secret", "/", 5672}},
		{"amqp://admin:secret@rabbit/", "amqps://other/", want{"amqps", "other", "admin", "secret", "/", 5671}},
	}
	for _, c := range cases {
		got, err := deriveDataURL(c.mgmt, c.address)
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
		if _, err := deriveDataURL("amqp://u:p@h/", bad); !errors.Is(err, ErrRPC) {
			t.Errorf("address %q: want ErrRPC, got %v", bad, err)
		}
	}
}

func TestURLErrorsHoldNoPassword(t *testing.T) {
	for _, raw := range []string{"http://user:hunter2@host/", "amqp://user:hunter2@host:notaport/"} {
		_, err := parseBrokerURL(raw)
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("%s: want ErrInvalid, got %v", RedactURL(raw), err)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("error leaks the password: %v", err)
		}
	}
	if got := RedactURL("amqp://user:hunter2@host/"); strings.Contains(got, "hunter2") || !strings.Contains(got, "user") {
		t.Fatalf("RedactURL = %q", got)
	}
}
