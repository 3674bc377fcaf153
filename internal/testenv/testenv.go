// Package testenv gives tests the broker they run against.
//
// Tests that need RabbitMQ take its URL from METRICQ_TEST_URL, which
// scripts/with-vhost.sh sets to a fresh vhost for each run:
//
//	scripts/with-vhost.sh go test ./...
//
// Without it such tests fail (they do not skip), so a missing broker can't
// pass for a green run.
package testenv

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EnvURL is the variable holding the broker URL (with a vhost of its own).
const EnvURL = "METRICQ_TEST_URL"

// LateMargin is how much later than its timeout a call may return in a
// test. Timers fire late on a loaded 2-core machine (0.6 s seen), while a
// call that ignored its timeout would overrun by an inner timeout (closing
// a connection may take amqpkit.CloseTimeout, 2 s) or for ever.
const LateMargin = time.Second

// URL returns the test broker's URL, failing the test when it is not set.
func URL(t testing.TB) string {
	t.Helper()
	u := envURL(t)
	sharedBroker(t)
	return u
}

func envURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		t.Fatalf("%s is not set: this test needs RabbitMQ. Run it through scripts/with-vhost.sh "+
			"(e.g. scripts/with-vhost.sh go test ./...), which starts a local broker and creates a fresh vhost, "+
			"or set %s=amqp://guest:guest@127.0.0.1:5672/<vhost> yourself", EnvURL, EnvURL)
	}
	return u
}

// Token returns a client token unique to this test and call:
// "<prefix>-<test name>-<random hex>", lower case, with characters outside
// [a-z0-9-] replaced by "-" and the name part cut to 40 bytes, so that queue
// names built from it ("<token>-<32 hex>-data") stay well within 255 bytes.
func Token(t testing.TB, prefix string) string {
	t.Helper()
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			return r
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return '-'
	}, t.Name())
	if len(name) > 40 {
		name = name[:40]
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + strings.Trim(name, "-") + "-" + hex.EncodeToString(b[:])
}

var (
	exclusiveOnce sync.Once
	exclusiveErr  error
	exclusiveFile *os.File // kept reachable: its finalizer would close it and drop the lock
)

// ExclusiveVhost makes this test binary the only one using the test vhost
// among the binaries that call it. Call it before starting a MetricQ manager
// (or anything else that consumes the vhost's "management" queue):
// `go test ./...` runs packages in parallel against the same vhost, and two
// managers there would take each other's requests.
//
// It takes an exclusive lock (flock) on a file named after the URL in the
// temporary directory, waiting for another binary to exit. The lock is held
// until this process exits, so calling it again, from any test, is free.
//
// While it waits, the process lets go of its shared broker lock, so that
// scripts/broker.sh, waiting to restart the broker, does not wait for a
// binary that only waits.
func ExclusiveVhost(t testing.TB) {
	t.Helper()
	u := envURL(t)
	exclusiveOnce.Do(func() {
		sum := sha256.Sum256([]byte(u))
		path := filepath.Join(os.TempDir(), "libmetricq-vhost-"+hex.EncodeToString(sum[:8])+".lock")
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			exclusiveErr = err
			return
		}
		// Deliberately never closed: the lock lives as long as the process.
		exclusiveFile = f
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			return
		}
		exclusiveErr = withoutSharedBroker(func() error { return syscall.Flock(int(f.Fd()), syscall.LOCK_EX) })
	})
	if exclusiveErr != nil {
		t.Fatalf("lock the test vhost: %v", exclusiveErr)
	}
}

// FreshVhost creates a vhost of its own for one test (through the broker's
// management API on 127.0.0.1:15672, which scripts/broker.sh enables) and
// returns its URL; the vhost is deleted when the test ends. Use it where a
// test needs a vhost no MetricQ manager has touched.
func FreshVhost(t testing.TB) string {
	t.Helper()
	base, err := url.Parse(URL(t))
	if err != nil {
		t.Fatalf("parse %s: %v", EnvURL, err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "libmetricq-fresh-" + hex.EncodeToString(b[:])
	user := base.User.Username()
	password, _ := base.User.Password()
	api := func(method, path, body string) {
		req, err := http.NewRequest(method, "http://"+base.Hostname()+":15672/api/"+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(user, password)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("RabbitMQ management API (enable it with scripts/broker.sh ensure): %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 && !(method == http.MethodDelete && resp.StatusCode == http.StatusNotFound) {
			t.Fatalf("RabbitMQ management API %s %s: %s", method, path, resp.Status)
		}
	}
	api(http.MethodPut, "vhosts/"+name, "")
	t.Cleanup(func() { api(http.MethodDelete, "vhosts/"+name, "") })
	api(http.MethodPut, "permissions/"+name+"/"+url.PathEscape(user), `{"configure":".*","write":".*","read":".*"}`)
	fresh := *base
	fresh.Path = "/" + name
	fresh.RawPath = ""
	return fresh.String()
}

// Root is the repository root: the directory holding go.mod, found upwards
// from the test's working directory.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}
