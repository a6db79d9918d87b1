package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"

	"github.com/portico/portico/config"
	"github.com/portico/portico/internal/testcert"
	"github.com/portico/portico/internal/testlog"
)

// pebble is Let's Encrypt's test CA, run in-process on loopback. Its
// validation authority resolves every name to 127.0.0.1 through a small DNS
// server and connects to the given ports there: Portico's listeners.
type pebble struct {
	directory string         // ACME directory URL
	caRoot    string         // PEM file trusted for the directory's own TLS
	roots     *x509.CertPool // the root Pebble issues under
	store     *db.MemoryStore
	orders    atomic.Int64 // new-order requests seen

	mu      sync.Mutex
	byName  map[string]int // new-order requests that reached Pebble, by name
	onOrder func(r *http.Request, name string) bool

	// Pebble races with itself (its account object is written and encoded
	// unlocked) when several clients register one key at once, as the
	// instances of a cluster do; the race detector would blame the test.
	signUp sync.Mutex
}

func startPebble(t *testing.T, httpPort, tlsPort int) *pebble {
	t.Helper()
	return startPebbleWith(t, httpPort, tlsPort, 0, nil)
}

// startPebbleWith issues certificates valid for validity (0: Pebble's
// default, 90 days). onOrder, if not nil, sees each new-order request
// first, with the name it asks for; it may block, and a false answer
// keeps the request from Pebble.
func startPebbleWith(t *testing.T, httpPort, tlsPort int, validity time.Duration, onOrder func(r *http.Request, name string) bool) *pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // validate at once, not after a random sleep
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no deliberately rejected nonces
	t.Setenv("PEBBLE_AUTHZREUSE", "0")      // every order validates afresh
	logs := &testlog.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble log:\n%s", logs.String())
		}
	})
	logger := log.New(logs, "pebble ", log.Lmicroseconds)

	p := &pebble{store: db.NewMemoryStore(), byName: map[string]int{}, onOrder: onOrder}
	profile := ca.Profile{Description: "default", ValidityPeriod: uint64(validity / time.Second)}
	authority := ca.New(logger, p.store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": profile})
	validator := va.New(logger, httpPort, tlsPort, false, startDNS(t), p.store)
	front := wfe.New(logger, p.store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	handler := front.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sign-me-up" {
			p.signUp.Lock()
			defer p.signUp.Unlock()
		}
		if r.Method == http.MethodPost && r.URL.Path == "/order-plz" {
			var ok bool
			if r, ok = p.newOrder(r); !ok {
				http.Error(w, "held back by the test", http.StatusServiceUnavailable)
				return
			}
		}
		handler.ServeHTTP(w, r)
	}))
	dirCA := testcert.NewCA(t)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{dirCA.Valid(t, "127.0.0.1").TLS}}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	p.directory = srv.URL + wfe.DirectoryPath
	p.caRoot = filepath.Join(t.TempDir(), "pebble-directory-ca.pem")
	if err := os.WriteFile(p.caRoot, dirCA.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	p.roots = x509.NewCertPool()
	p.roots.AddCert(authority.GetRootCert(0).Cert)
	return p
}

// newOrder counts a new-order request by the name it asks for, and lets
// onOrder hold it back; it returns the request with its body restored.
func (p *pebble) newOrder(r *http.Request) (*http.Request, bool) {
	p.orders.Add(1)
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	var jws struct{ Payload string }
	var order struct{ Identifiers []struct{ Value string } }
	_ = json.Unmarshal(body, &jws)
	payload, _ := base64.RawURLEncoding.DecodeString(jws.Payload)
	_ = json.Unmarshal(payload, &order)
	name := ""
	if len(order.Identifiers) > 0 {
		name = order.Identifiers[0].Value
	}
	if p.onOrder != nil && !p.onOrder(r, name) {
		return r, false
	}
	p.mu.Lock()
	p.byName[name]++
	p.mu.Unlock()
	return r, true
}

// ordersFor is how many new orders for name reached Pebble.
func (p *pebble) ordersFor(name string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.byName[name]
}

// challengeType returns the type of the challenge that validated the order
// which issued leaf.
func (p *pebble) challengeType(t *testing.T, leaf *x509.Certificate) string {
	t.Helper()
	serial := hex.EncodeToString(leaf.SerialNumber.Bytes())
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		o, err := p.store.GetOrderByIssuedSerial(serial) // stored just after issuance
		if err != nil {
			continue
		}
		o.RLock()
		authzs := o.AuthorizationObjects
		o.RUnlock()
		for _, z := range authzs {
			z.RLock()
			chals := z.Challenges
			z.RUnlock()
			for _, c := range chals {
				c.RLock()
				typ, status := c.Type, c.Status
				c.RUnlock()
				if status == "valid" {
					return typ
				}
			}
		}
	}
	t.Fatalf("no valid challenge found for the order of certificate %s", serial)
	return ""
}

// startDNS answers every A query with 127.0.0.1 (and AAAA with nothing),
// over TCP as Pebble asks.
func startDNS(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}

// loopbackPorts reserves n distinct loopback ports and releases them for
// the test to name.
func loopbackPorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return ports
}

// startServe runs serve with cfg until the returned stop is called (or the
// test ends) and returns its bound addresses.
func startServe(t *testing.T, cfg *config.Config) (listenAddrs, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan listenAddrs, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, discardLogger(), func(a listenAddrs) { ready <- a }) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("serve did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	select {
	case a := <-ready:
		return a, stop
	case err := <-done:
		t.Fatalf("serve returned before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("serve never became ready")
	}
	return listenAddrs{}, stop
}

// httpsGet fetches https://host/ over HTTP/2 from the listener at addr,
// verifying the chain against roots for host.
func httpsGet(addr, host string, roots *x509.CertPool) (*http.Response, string, error) {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: host},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 90 * time.Second}
	res, err := c.Get("https://" + host + "/")
	if err != nil {
		return nil, "", err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return res, string(body), err
}

func hostBackend(t *testing.T) string {
	t.Helper()
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend saw %s %s", r.Host, r.Header.Get("X-Forwarded-Proto"))
	}))
	t.Cleanup(be.Close)
	return be.URL
}

func acmeConfig(t *testing.T, p *pebble, httpPort, httpsPort int, cacheDir string, extra string) *config.Config {
	t.Helper()
	src := acmeDoc(t, p, httpPort, httpsPort, cacheDir, extra, "")
	cfg, err := config.Parse([]byte(src), "acme.toml")
	if err != nil {
		t.Fatalf("config: %v\n%s", err, src)
	}
	return cfg
}

// acmeDoc is the configuration acmeConfig parses: [server] keys and tables
// in extra, [tls.acme] keys in acmeKeys. The tests read no access log.
func acmeDoc(t *testing.T, p *pebble, httpPort, httpsPort int, cacheDir, extra, acmeKeys string) string {
	t.Helper()
	return fmt.Sprintf(`
[server]
http_addr = "127.0.0.1:%d"
https_addr = "127.0.0.1:%d"
admin_addr = "off"
shutdown_timeout = "5s"
%s
[tls.acme]
enabled = true
email = "ops@portico.test"
directory = %q
ca_root = %q
cache_dir = %q
%s
[pools.app]
backends = [{ url = %q }]
[[routes]]
host = "alpn.portico.test"
pool = "app"
[[routes]]
host = "http01.portico.test"
pool = "app"
[[routes]]
pool = "app"
[log]
access_log = "off"
`, httpPort, httpsPort, extra, p.directory, p.caRoot, cacheDir, acmeKeys, hostBackend(t))
}

// TestACMETLSALPN01SNIAndCachedRestart runs Portico against Pebble with
// TLS-ALPN-01 reachable on its HTTPS port, two static certificates and
// unknown names rejected.
func TestACMETLSALPN01SNIAndCachedRestart(t *testing.T) {
	ports := loopbackPorts(t, 2)
	httpPort, httpsPort := ports[0], ports[1]
	p := startPebble(t, httpPort, httpsPort)

	static := testcert.NewCA(t)
	dir := t.TempDir()
	certA, keyA := static.Valid(t, "static.portico.test").WriteFiles(t, dir, "static")
	certW, keyW := static.Valid(t, "*.wild.portico.test").WriteFiles(t, dir, "wild")
	cacheDir := filepath.Join(dir, "acme", "cache")
	extra := fmt.Sprintf(`[tls]
unknown_sni = "reject"
[[tls.certificates]]
cert_file = %q
key_file = %q
[[tls.certificates]]
cert_file = %q
key_file = %q`, certA, keyA, certW, keyW)
	cfg := acmeConfig(t, p, httpPort, httpsPort, cacheDir, extra)
	cfg.TLS.ACME.Hosts = []string{"alpn.portico.test"}
	addrs, stop := startServe(t, cfg)

	var issued *x509.Certificate
	t.Run("certificate over TLS-ALPN-01 serves HTTP/2 verified against Pebble's root", func(t *testing.T) {
		res, body, err := httpsGet(addrs.https, "alpn.portico.test", p.roots)
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		if res.ProtoMajor != 2 || res.StatusCode != 200 || body != "backend saw alpn.portico.test https" {
			t.Fatalf("got %s %d %q, want HTTP/2 200 from the backend", res.Proto, res.StatusCode, body)
		}
		issued = res.TLS.PeerCertificates[0]
		if typ := p.challengeType(t, issued); typ != "tls-alpn-01" {
			t.Errorf("validated by %s, want tls-alpn-01", typ)
		}
		if n := p.orders.Load(); n != 1 {
			t.Errorf("%d orders, want 1", n)
		}
		fi, err := os.Stat(cacheDir)
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("cache dir: %v, mode %v; want it created 0700", err, fi.Mode().Perm())
		}
	})
	if issued == nil {
		t.FailNow()
	}

	t.Run("static certificates chosen by SNI, wildcard included", func(t *testing.T) {
		for _, host := range []string{"static.portico.test", "a.wild.portico.test"} {
			_, body, err := httpsGet(addrs.https, host, static.Pool())
			if err != nil {
				t.Fatalf("%s: %v", host, err)
			}
			if want := "backend saw " + host + " https"; body != want {
				t.Errorf("%s: body %q, want %q", host, body, want)
			}
		}
	})

	t.Run("unknown SNI fails the handshake and starts no order", func(t *testing.T) {
		before := p.orders.Load()
		for _, name := range []string{"unknown.portico.test", "b.c.wild.portico.test", ""} {
			c, err := tls.Dial("tcp", addrs.https, &tls.Config{ServerName: name, InsecureSkipVerify: true})
			if err == nil {
				_ = c.Close()
				t.Errorf("SNI %q: handshake succeeded, want a failure", name)
			}
		}
		if after := p.orders.Load(); after != before {
			t.Errorf("orders went from %d to %d", before, after)
		}
	})

	t.Run("restart reuses the cached certificate without a new order", func(t *testing.T) {
		stop()
		addrs, _ := startServe(t, cfg)
		before := p.orders.Load()
		res, _, err := httpsGet(addrs.https, "alpn.portico.test", p.roots)
		if err != nil {
			t.Fatalf("GET after restart: %v", err)
		}
		if got := res.TLS.PeerCertificates[0]; got.SerialNumber.Cmp(issued.SerialNumber) != 0 {
			t.Errorf("serial %x after restart, want the cached %x", got.SerialNumber, issued.SerialNumber)
		}
		time.Sleep(200 * time.Millisecond) // room for a background order, if one were started
		if after := p.orders.Load(); after != before {
			t.Errorf("orders went from %d to %d", before, after)
		}
	})
}

// TestACMEHTTP01WhenTLSALPNUnreachable points Pebble's TLS-ALPN-01 checks
// at a closed port, so the only challenge that can succeed is HTTP-01 on
// Portico's plain listener, which redirects everything else.
func TestACMEHTTP01WhenTLSALPNUnreachable(t *testing.T) {
	ports := loopbackPorts(t, 3)
	httpPort, httpsPort, closedPort := ports[0], ports[1], ports[2]
	p := startPebble(t, httpPort, closedPort)
	cfg := acmeConfig(t, p, httpPort, httpsPort, filepath.Join(t.TempDir(), "acme"), "")
	cfg.TLS.ACME.Hosts = []string{"http01.portico.test"}
	if !cfg.Server.RedirectHTTP {
		t.Fatal("redirect_http is not on by default with https_addr")
	}
	addrs, _ := startServe(t, cfg)

	res, body, err := httpsGet(addrs.https, "http01.portico.test", p.roots)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	if res.ProtoMajor != 2 || body != "backend saw http01.portico.test https" {
		t.Fatalf("got %s %q", res.Proto, body)
	}
	if typ := p.challengeType(t, res.TLS.PeerCertificates[0]); typ != "http-01" {
		t.Errorf("validated by %s, want http-01", typ)
	}

	// Everything but the challenges is redirected.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addrs.http+"/p?q=1", nil)
	req.Host = "http01.portico.test"
	rr, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rr.Body.Close()
	want := "https://http01.portico.test:" + strconv.Itoa(httpsPort) + "/p?q=1"
	if rr.StatusCode != http.StatusPermanentRedirect || rr.Header.Get("Location") != want {
		t.Errorf("plain GET: %d %q, want 308 %q", rr.StatusCode, rr.Header.Get("Location"), want)
	}
	if !strings.HasPrefix(addrs.http, "127.0.0.1:") || !strings.HasPrefix(addrs.https, "127.0.0.1:") {
		t.Errorf("listeners %s, %s: want loopback", addrs.http, addrs.https)
	}
}
