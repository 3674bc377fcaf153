package libmetricq_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libmetricq/libmetricq/internal/manager"
	"github.com/libmetricq/libmetricq/internal/testenv"
	"github.com/libmetricq/libmetricq/libmetricq"
)

// TLS against the broker's TLS listener on 127.0.0.1:5671, whose CA,
// certificate (for localhost and 127.0.0.1) and a client certificate
// scripts/broker.sh generates. The tests make their own wrong CA and an
// expired certificate.

// testCA is a CA made by a test, which can sign certificates.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemPath string
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, pemPath: filepath.Join(dir, name+".pem")}
	writePEM(t, ca.pemPath, "CERTIFICATE", der)
	return ca
}

// issue signs a certificate for hosts (or a client certificate when hosts
// is empty) valid from notBefore to notAfter, and writes <name>.pem and
// <name>.key.
func (ca *testCA) issue(t *testing.T, dir, name string, hosts []string, notBefore, notAfter time.Time) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if len(hosts) > 0 {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	writePEM(t, certPath, "CERTIFICATE", der)
	writePEM(t, keyPath, "EC PRIVATE KEY", keyDER)
	return certPath, keyPath
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func q(pairs ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(pairs); i += 2 {
		v.Set(pairs[i], pairs[i+1])
	}
	return v.Encode()
}

func connectErr(t *testing.T, rawURL string) error {
	t.Helper()
	src, err := libmetricq.NewSource(rawURL, testenv.Token(t, "source"), libmetricq.WithLogger(slogDiscard()))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	err = src.Connect(ctx)
	if err == nil {
		stopSoon(src)
	}
	return err
}

// A verified TLS connection: both the management connection and the data
// connection (derived from the manager's "vhost:..." address) use TLS, and
// data flows.
func TestTLSVerifiedConnect(t *testing.T) {
	dir := testenv.TLSDir(t)
	startManager(t, manager.Config{})
	api := testenv.ManagementAPI(t)
	sink := rawSink(t, testenv.URL(t), "tls.metric")
	token := testenv.Token(t, "source")
	tlsURL := testenv.TLSURL(t, "localhost", q("cacertfile", filepath.Join(dir, "ca.pem")))
	src, err := libmetricq.NewSource(tlsURL, token)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := src.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopSoon(src) })
	if err := src.DeclareMetricList(ctx, []string{"tls.metric"}); err != nil {
		t.Fatal(err)
	}
	if err := src.Send(ctx, "tls.metric", ts(1), 1); err != nil {
		t.Fatal(err)
	}
	expectPoints(t, next(t, sink), "tls.metric", 1, 1)
	waitUntil(t, 15*time.Second, "both connections in the broker's list", func() bool {
		tlsConns := 0
		for _, c := range api.Connections(t) {
			if strings.HasSuffix(c.ClientName(), "connection "+token) {
				if !c.SSL {
					t.Fatalf("%s is not TLS", c.ClientName())
				}
				tlsConns++
			}
		}
		return tlsConns == 2
	})

	// The aliases, an IP address (the certificate names 127.0.0.1 too),
	// and a client certificate signed by the broker's CA.
	aliases := testenv.TLSURL(t, "127.0.0.1", q("cafile", filepath.Join(dir, "ca.pem"),
		"certfile", filepath.Join(dir, "client.pem"), "keyfile", filepath.Join(dir, "client.key")))
	if err := connectErr(t, aliases); err != nil {
		t.Fatal(err)
	}
}

// Verification is on by default: a CA that did not sign the broker's
// certificate, a host name the certificate does not hold, an expired
// certificate and a client certificate from an unknown CA are refused with
// ErrConnect and a readable reason.
func TestTLSRefusals(t *testing.T) {
	dir := testenv.TLSDir(t)
	startManager(t, manager.Config{})
	tmp := t.TempDir()
	wrong := newTestCA(t, tmp, "wrong-ca")

	err := connectErr(t, testenv.TLSURL(t, "localhost", q("cacertfile", wrong.pemPath)))
	if !errors.Is(err, libmetricq.ErrConnect) || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("wrong CA: %v", err)
	}
	t.Logf("wrong CA: %v", err)
	// Without a CA file the system trust store is used, which does not
	// know the test CA either.
	err = connectErr(t, testenv.TLSURL(t, "localhost", ""))
	if !errors.Is(err, libmetricq.ErrConnect) || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("system trust store: %v", err)
	}
	t.Logf("system trust store: %v", err)
	err = connectErr(t, testenv.TLSURL(t, "127.0.0.1", q("cacertfile", filepath.Join(dir, "ca.pem"), "server_name_indication", "wrong.example")))
	if !errors.Is(err, libmetricq.ErrConnect) || !strings.Contains(err.Error(), "wrong.example") {
		t.Fatalf("host name mismatch: %v", err)
	}
	t.Logf("host name mismatch: %v", err)
	// The broker (verify_peer) refuses a client certificate it cannot verify.
	clientCert, clientKey := wrong.issue(t, tmp, "wrong-client", nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	err = connectErr(t, testenv.TLSURL(t, "localhost", q("cacertfile", filepath.Join(dir, "ca.pem"), "certfile", clientCert, "keyfile", clientKey)))
	if !errors.Is(err, libmetricq.ErrConnect) || !strings.Contains(err.Error(), "refuse") {
		t.Fatalf("client certificate of an unknown CA: %v", err)
	}
	t.Logf("client certificate of an unknown CA: %v", err)

	// An expired certificate, from a TLS server of our own (the broker's
	// certificate is valid).
	serverCert, serverKey := wrong.issue(t, tmp, "expired", []string{"127.0.0.1"}, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	pair, err := tls.LoadX509KeyPair(serverCert, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	}()
	err = connectErr(t, "amqps://guest:guest@"+l.Addr().String()+"/?"+q("cacertfile", wrong.pemPath))
	if !errors.Is(err, libmetricq.ErrConnect) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired certificate: %v", err)
	}
	t.Logf("expired certificate: %v", err)
}

// TLS parameters are checked when the source is made.
func TestTLSParameterErrors(t *testing.T) {
	tmp := t.TempDir()
	ca := newTestCA(t, tmp, "ca")
	garbage := filepath.Join(tmp, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{
		"amqp://u:pw@host/?cacertfile=" + ca.pemPath:                     "needs an amqps",
		"amqps://u:pw@host/?cacertfile=" + filepath.Join(tmp, "missing"): "no such file",
		"amqps://u:pw@host/?cacertfile=" + garbage:                       "no PEM certificate",
		"amqps://u:pw@host/?certfile=" + ca.pemPath:                      "both or neither",
		"amqps://u:pw@host/?verify=maybe":                                "verify",
		"amqps://u:pw@host/?cacert=" + ca.pemPath:                        "unknown query parameter",
	}
	for raw, why := range bad {
		_, err := libmetricq.NewSource(raw, "source-tls")
		if !errors.Is(err, libmetricq.ErrInvalid) || !strings.Contains(err.Error(), why) || strings.Contains(err.Error(), "pw@") {
			t.Errorf("%s: want ErrInvalid saying %q, got %v", libmetricq.RedactURL(raw), why, err)
		}
	}
	if _, err := libmetricq.NewSource("amqp://host/", "source-tls", libmetricq.WithTLSConfig(&tls.Config{})); !errors.Is(err, libmetricq.ErrInvalid) {
		t.Errorf("WithTLSConfig on amqp://: %v", err)
	}
	if _, err := libmetricq.NewSource("amqps://host/?server_name=x&cafile="+ca.pemPath, "source-tls"); err != nil {
		t.Errorf("aliases: %v", err)
	}
}
