package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// PrivateBroker is a RabbitMQ node of a test's own, for tests that restart
// a broker or raise an alarm on it: the shared broker on 5672 is never
// touched, since other test runs use it at the same time. The node has its
// own name, ports, Erlang cookie and directories, all under the test's
// temporary directory; it listens on loopback only and has no plugins.
type PrivateBroker struct {
	t       testing.TB
	Node    string // Erlang node name, e.g. libmetricq-1a2b3c@localhost
	URL     string // amqp://guest:guest@127.0.0.1:<port>/
	env     []string
	process *exec.Cmd
	exited  chan struct{}
	logFile string
}

const rabbitBin = "/usr/lib/rabbitmq/bin"

// StartPrivateBroker starts a node and stops it when the test ends.
func StartPrivateBroker(t testing.TB) *PrivateBroker {
	t.Helper()
	if _, err := os.Stat(filepath.Join(rabbitBin, "rabbitmq-server")); err != nil {
		t.Fatalf("RabbitMQ is not installed (%v): run scripts/broker.sh ensure", err)
	}
	dir := t.TempDir()
	var random [4]byte
	_, _ = rand.Read(random[:])
	node := "libmetricq-" + hex.EncodeToString(random[:]) + "@localhost"
	amqpPort, distPort := freePort(t), freePort(t)
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	// The cookie lets this test's rabbitmqctl, and no one else's, talk to
	// the node.
	write("home/.erlang.cookie", "LIBMETRICQ"+strings.ToUpper(hex.EncodeToString(random[:]))+"PRIVATE", 0o400)
	config := write("rabbitmq.conf", fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\n", amqpPort), 0o600)
	plugins := write("enabled_plugins", "[].\n", 0o600)
	b := &PrivateBroker{
		t:    t,
		Node: node,
		URL:  fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", amqpPort),
		env: append(os.Environ(),
			"HOME="+home,
			"RABBITMQ_NODENAME="+node,
			fmt.Sprintf("RABBITMQ_NODE_PORT=%d", amqpPort),
			fmt.Sprintf("RABBITMQ_DIST_PORT=%d", distPort),
			"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
			"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
			"RABBITMQ_CONFIG_FILE="+strings.TrimSuffix(config, ".conf"),
			"RABBITMQ_ENABLED_PLUGINS_FILE="+plugins,
			"RABBITMQ_PID_FILE="+filepath.Join(dir, "pid"),
			"RABBITMQ_CONF_ENV_FILE="+filepath.Join(dir, "no-env-file"),
		),
		exited:  make(chan struct{}),
		logFile: filepath.Join(dir, "server.out"),
	}
	out, err := os.Create(b.logFile)
	if err != nil {
		t.Fatal(err)
	}
	b.process = exec.Command(filepath.Join(rabbitBin, "rabbitmq-server"))
	b.process.Env = b.env
	b.process.Stdout, b.process.Stderr = out, out
	start := time.Now()
	if err := b.process.Start(); err != nil {
		t.Fatalf("private broker: %v", err)
	}
	go func() {
		_ = b.process.Wait()
		out.Close()
		close(b.exited)
	}()
	t.Cleanup(b.stop)
	b.awaitStartup(90 * time.Second)
	t.Logf("private broker %s on port %d started in %v", node, amqpPort, time.Since(start).Round(time.Millisecond))
	return b
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// awaitStartup waits until the node's broker application runs.
func (b *PrivateBroker) awaitStartup(timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, err := b.ctl("await_startup", "--timeout", "10")
		if err == nil {
			return
		}
		select {
		case <-b.exited:
			b.t.Fatalf("private broker exited while starting: %v\n%s", err, b.tail())
		default:
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("private broker not started within %v: %v\n%s", timeout, err, b.tail())
		}
		time.Sleep(200 * time.Millisecond) // polling the node: not a synchronisation between the test's goroutines
	}
}

func (b *PrivateBroker) ctl(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(rabbitBin, "rabbitmqctl"), append([]string{"-n", b.Node}, args...)...)
	cmd.Env = b.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Ctl runs rabbitmqctl against the node, failing the test on an error.
func (b *PrivateBroker) Ctl(args ...string) string {
	b.t.Helper()
	out, err := b.ctl(args...)
	if err != nil {
		b.t.Fatalf("rabbitmqctl -n %s %s: %v\n%s", b.Node, strings.Join(args, " "), err, out)
	}
	return out
}

// StopApp and StartApp stop and start the broker application, as a broker
// restart does (the Erlang node stays up, every connection is closed).
func (b *PrivateBroker) StopApp() { b.t.Helper(); b.Ctl("stop_app") }

func (b *PrivateBroker) StartApp() {
	b.t.Helper()
	b.Ctl("start_app")
	b.awaitStartup(60 * time.Second)
}

// SetMemoryAlarm raises (on) or clears the memory alarm by moving the
// memory high watermark below what the node uses, or back to the default.
// The node is the test's own, so nothing needs restoring for others.
func (b *PrivateBroker) SetMemoryAlarm(on bool) {
	b.t.Helper()
	if on {
		b.Ctl("set_vm_memory_high_watermark", "0.000001")
	} else {
		b.Ctl("set_vm_memory_high_watermark", "0.4")
	}
}

func (b *PrivateBroker) tail() string {
	data, _ := os.ReadFile(b.logFile)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// stop halts the node, and kills it if it does not halt.
func (b *PrivateBroker) stop() {
	if out, err := b.ctl("stop"); err != nil {
		b.t.Logf("private broker: rabbitmqctl stop: %v\n%s", err, out)
	}
	select {
	case <-b.exited:
		return
	case <-time.After(30 * time.Second):
	}
	_ = b.process.Process.Kill()
	<-b.exited
}
