package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The broker lock. Every test binary that uses the broker (through URL)
// holds a shared flock on $TMPDIR/libmetricq-broker.lock for as long as it
// runs; scripts/broker.sh takes it exclusively before it restarts the
// broker, so it waits until no binary of any run is using the broker. No
// test restarts the shared broker or changes its global settings: those
// that must run a node of their own (StartPrivateBroker).
const brokerLockName = "libmetricq-broker.lock"

var broker struct {
	mu     sync.Mutex
	file   *os.File // kept reachable: its finalizer would drop the lock
	shared bool     // LOCK_SH held
	err    error
}

// BrokerLockPath is the lock file shared with scripts/broker.sh.
func BrokerLockPath() string { return filepath.Join(os.TempDir(), brokerLockName) }

func brokerFile() (*os.File, error) {
	if broker.file == nil && broker.err == nil {
		broker.file, broker.err = os.OpenFile(BrokerLockPath(), os.O_CREATE|os.O_RDWR, 0o666)
	}
	return broker.file, broker.err
}

// sharedBroker takes the shared broker lock for the rest of the process.
func sharedBroker(t testing.TB) {
	t.Helper()
	broker.mu.Lock()
	defer broker.mu.Unlock()
	if broker.shared {
		return
	}
	f, err := brokerFile()
	if err == nil {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH)
	}
	if err != nil {
		t.Fatalf("lock %s: %v", BrokerLockPath(), err)
	}
	broker.shared = true
}

// withoutSharedBroker runs wait with the shared broker lock released, and
// takes it again afterwards.
func withoutSharedBroker(wait func() error) error {
	broker.mu.Lock()
	held := broker.shared
	if held {
		_ = syscall.Flock(int(broker.file.Fd()), syscall.LOCK_UN)
		broker.shared = false
	}
	broker.mu.Unlock()
	err := wait()
	if held {
		broker.mu.Lock()
		if !broker.shared {
			if lerr := syscall.Flock(int(broker.file.Fd()), syscall.LOCK_SH); lerr == nil {
				broker.shared = true
			}
		}
		broker.mu.Unlock()
	}
	return err
}

// Rabbitmqctl runs rabbitmqctl (from PATH or /usr/sbin) with args and
// returns its output, failing the test on an error. It needs the rights
// rabbitmqctl needs (root, or the rabbitmq user's Erlang cookie).
func Rabbitmqctl(t testing.TB, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		bin = "/usr/sbin/rabbitmqctl"
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// API is the broker's management HTTP API (127.0.0.1:15672, which
// scripts/broker.sh enables), with the credentials of the test URL.
type API struct {
	base       string
	user, pass string
	Vhost      string // the test URL's vhost
}

// ManagementAPI returns the API of the test broker.
func ManagementAPI(t testing.TB) *API {
	t.Helper()
	u, err := url.Parse(URL(t))
	if err != nil {
		t.Fatalf("parse %s: %v", EnvURL, err)
	}
	pass, _ := u.User.Password()
	vhost := strings.TrimPrefix(u.Path, "/")
	if vhost == "" {
		vhost = "/"
	}
	return &API{base: "http://" + u.Hostname() + ":15672/api/", user: u.User.Username(), pass: pass, Vhost: vhost}
}

var apiClient = &http.Client{Timeout: 30 * time.Second}

// Do calls the API and returns the status and body. It fails the test when
// the API cannot be reached.
func (a *API) Do(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, a.base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(a.user, a.pass)
	req.Header.Set("Content-Type", "application/json")
	resp, err := apiClient.Do(req)
	if err != nil {
		t.Fatalf("RabbitMQ management API (enable it with scripts/broker.sh ensure): %v", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// Must calls the API and fails the test on a status >= 300 (but 404 for
// DELETE, which means "gone already").
func (a *API) Must(t testing.TB, method, path string, body any) []byte {
	t.Helper()
	code, data := a.Do(t, method, path, body)
	if code >= 300 && !(method == http.MethodDelete && code == http.StatusNotFound) {
		t.Fatalf("RabbitMQ management API %s %s: HTTP %d: %s", method, path, code, data)
	}
	return data
}

// Connection is what the API tells about a client connection.
type Connection struct {
	Name             string         `json:"name"`
	User             string         `json:"user"`
	Vhost            string         `json:"vhost"`
	SSL              bool           `json:"ssl"`
	State            string         `json:"state"`
	Heartbeat        int            `json:"timeout"` // negotiated, in seconds
	ClientProperties map[string]any `json:"client_properties"`
}

// ClientName is the connection name the client chose
// ("management connection <token>"...).
func (c Connection) ClientName() string {
	name, _ := c.ClientProperties["connection_name"].(string)
	return name
}

// Connections lists the broker's client connections. The API refreshes its
// list every few seconds at most; connections younger than that may be
// missing.
func (a *API) Connections(t testing.TB) []Connection {
	t.Helper()
	var out []Connection
	if err := json.Unmarshal(a.Must(t, http.MethodGet, "connections?columns=name,user,vhost,ssl,state,timeout,client_properties", nil), &out); err != nil {
		t.Fatalf("connections: %v", err)
	}
	return out
}

// CloseConnections force-closes every connection whose client-chosen name
// contains substr, as `rabbitmqctl close_connection` does (the client gets
// connection.close 320 CONNECTION_FORCED), and returns how many it closed.
// It retries until it has closed at least want of them, or timeout. It
// asks the broker itself (rabbitmqctl eval, under a second) rather than the
// management API, whose connection list lags by up to 5 s.
func (a *API) CloseConnections(t testing.TB, substr string, want int, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	closed := 0
	for {
		closed += a.evalConnections(t, substr, `[rabbit_networking:close_connection(P, "closed by a libmetricq test") || P <- Ps], length(Ps).`)
		if closed >= want || time.Now().After(deadline) {
			return closed
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// CountConnections counts the broker's connections whose client-chosen
// name contains substr, asking the broker itself (see CloseConnections).
func (a *API) CountConnections(t testing.TB, substr string) int {
	t.Helper()
	return a.evalConnections(t, substr, `length(Ps).`)
}

// evalConnections binds Ps to the connections whose client-chosen name
// contains substr and evaluates then, which must yield an integer.
func (a *API) evalConnections(t testing.TB, substr, then string) int {
	t.Helper()
	if strings.ContainsAny(substr, "\"\\") {
		t.Fatalf("connections: unsupported characters in %q", substr)
	}
	expr := `Sub = <<"` + substr + `">>,
Ps = [P || P <- rabbit_networking:connections(),
	Name <- [try
			Props = proplists:get_value(client_properties, rabbit_networking:connection_info(P, [client_properties])),
			{_, longstr, N} = lists:keyfind(<<"connection_name">>, 1, Props),
			N
		catch _:_ -> <<>> end],
	binary:match(Name, Sub) =/= nomatch],
` + then
	out := strings.TrimSpace(Rabbitmqctl(t, "eval", expr))
	n, err := strconv.Atoi(out)
	if err != nil {
		t.Fatalf("connections: rabbitmqctl eval said %q", out)
	}
	return n
}

// CreateUser adds a user with full rights on the test vhost (deleted when
// the test ends) and returns the test URL with that user's credentials.
func (a *API) CreateUser(t testing.TB, name, password string) string {
	t.Helper()
	a.Must(t, http.MethodPut, "users/"+url.PathEscape(name), map[string]string{"password": password, "tags": ""})
	t.Cleanup(func() { a.Do(t, http.MethodDelete, "users/"+url.PathEscape(name), nil) })
	a.Permit(t, name)
	u, _ := url.Parse(URL(t))
	u.User = url.UserPassword(name, password)
	return u.String()
}

// Permit gives a user full rights on the test vhost.
func (a *API) Permit(t testing.TB, user string) {
	t.Helper()
	a.Must(t, http.MethodPut, "permissions/"+url.PathEscape(a.Vhost)+"/"+url.PathEscape(user),
		map[string]string{"configure": ".*", "write": ".*", "read": ".*"})
}

// Revoke takes a user's rights on the test vhost away: its next login to
// the vhost is refused at once (connection.open, NOT_ALLOWED). Existing
// connections stay open.
func (a *API) Revoke(t testing.TB, user string) {
	t.Helper()
	a.Must(t, http.MethodDelete, "permissions/"+url.PathEscape(a.Vhost)+"/"+url.PathEscape(user), nil)
}

// DeleteUser removes a user; the broker closes its connections.
func (a *API) DeleteUser(t testing.TB, name string) {
	t.Helper()
	a.Must(t, http.MethodDelete, "users/"+url.PathEscape(name), nil)
}

// Queue is what the API tells about a queue.
type Queue struct {
	Name     string `json:"name"`
	Messages int    `json:"messages"`
	Ready    int    `json:"messages_ready"`
	Unacked  int    `json:"messages_unacknowledged"`
	Stats    struct {
		Redeliver int `json:"redeliver"`
	} `json:"message_stats"`
}

// Queue looks a queue of the test vhost up.
func (a *API) Queue(t testing.TB, name string) (Queue, bool) {
	t.Helper()
	code, data := a.Do(t, http.MethodGet, "queues/"+url.PathEscape(a.Vhost)+"/"+url.PathEscape(name), nil)
	if code == http.StatusNotFound {
		return Queue{}, false
	}
	if code >= 300 {
		t.Fatalf("queue %s: HTTP %d: %s", name, code, data)
	}
	var q Queue
	if err := json.Unmarshal(data, &q); err != nil {
		t.Fatalf("queue %s: %v", name, err)
	}
	return q, true
}

// EnvTLSDir names the directory with the broker's test TLS material, which
// scripts/broker.sh generates: ca.pem (the CA), server.pem/server.key (the
// broker's certificate, for localhost and 127.0.0.1), client.pem/client.key
// (a client certificate the CA signed).
const EnvTLSDir = "METRICQ_TEST_TLS_DIR"

// DefaultTLSDir is where scripts/broker.sh puts it.
const DefaultTLSDir = "/etc/rabbitmq/libmetricq-tls"

// TLSPort is the broker's TLS listener (127.0.0.1).
const TLSPort = 5671

// TLSDir returns the TLS material directory, failing the test when the
// broker has no TLS listener.
func TLSDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(EnvTLSDir)
	if dir == "" {
		dir = DefaultTLSDir
	}
	if _, err := os.Stat(filepath.Join(dir, "ca.pem")); err != nil {
		t.Fatalf("no test CA in %s (%v): run scripts/broker.sh ensure (as root), which sets up the broker's TLS listener on 127.0.0.1:%d", dir, err, TLSPort)
	}
	return dir
}

// TLSURL is the test URL on the TLS listener: amqps://, host, port 5671,
// the same vhost and credentials, and query (e.g. "cacertfile=...").
func TLSURL(t testing.TB, host, query string) string {
	t.Helper()
	u, err := url.Parse(URL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Scheme = "amqps"
	u.Host = fmt.Sprintf("%s:%d", host, TLSPort)
	u.RawQuery = query
	return u.String()
}
