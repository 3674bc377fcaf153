package ctest

import (
	"context"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/tests/harness"
)

// failureURLs prepares the brokers a connect must fail against. Their
// passwords contain "s3cret", which the C test looks for in every error
// text and log line.
func failureURLs(t *testing.T, brokerURL string) []string {
	t.Helper()
	// A listener that accepts and then says nothing.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var heldMu sync.Mutex
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			heldMu.Lock()
			held = append(held, c)
			heldMu.Unlock()
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		heldMu.Lock()
		for _, c := range held {
			c.Close()
		}
		heldMu.Unlock()
	})

	// The real broker with a wrong password.
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), "wrong-s3cret")
	badPW := u.String()

	// A vhost whose manager has gone: exchanges and the management queue
	// exist, so requests are routed, but nobody answers.
	silentManager := testenv.FreshVhost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gone, err := manager.Start(ctx, manager.Config{URL: silentManager, Logger: harness.QuietLogger()})
	if err != nil {
		t.Fatalf("manager on the silent vhost: %v", err)
	}
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	return []string{
		"METRICQ_TEST_REFUSED_URL=" + harness.RefusedURL(t), // a port nobody listens on
		"METRICQ_TEST_BADPW_URL=" + badPW,
		"METRICQ_TEST_SILENT_TCP_URL=amqp://guest:silent-s3cret@" + silent.Addr().String() + "/",
		"METRICQ_TEST_SILENT_MANAGER_URL=" + silentManager,
	}
}

// TestC runs tests/c/test_capi.c against a local manager and checks what
// its sink received; then the C examples.
func TestC(t *testing.T) {
	harness.BuildLib(t)
	env := harness.Start(t, map[string]map[string]any{ // one manager per vhost among the test binaries
		"ctest-config":            {"rate": 5},
		"source-c-interval-test":  {"rate": 20, "prefix": "example.c.sysinfo"},
		"source-c-minimal-test-1": {},
	})
	t.Run("test_capi", func(t *testing.T) {
		exe := filepath.Join(t.TempDir(), "test_capi")
		compileC(t, exe, "tests/c/test_capi.c")
		env.RunProgram(t, 8*time.Minute, "ctest.", failureURLs(t, env.URL), exe)
	})
	t.Run("examples", func(t *testing.T) { runExamples(t, env.Sink, env.URL) })
}
