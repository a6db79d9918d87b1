package tlsmgr

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico/portico/config"
	"github.com/portico/portico/internal/testcert"
	"github.com/portico/portico/internal/testlog"
)

// handshake runs a real TLS handshake against m for serverName and returns
// the first name of the certificate served, or the error.
func handshake(t *testing.T, m *Manager, serverName string) (string, error) {
	t.Helper()
	cs, ss := net.Pipe()
	defer cs.Close()
	defer ss.Close()
	var cur Current
	cur.Store(m)
	go func() { _ = tls.Server(ss, cur.TLSConfig()).Handshake() }()
	c := tls.Client(cs, &tls.Config{ServerName: serverName, InsecureSkipVerify: true})
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		return "", err
	}
	return c.ConnectionState().PeerCertificates[0].DNSNames[0], nil
}

func staticCerts(t *testing.T, names ...string) []*config.Certificate {
	t.Helper()
	ca := testcert.NewCA(t)
	var cs []*config.Certificate
	for _, n := range names {
		p := ca.Valid(t, n)
		cs = append(cs, &config.Certificate{CertFile: n + ".crt", Loaded: &p.TLS})
	}
	return cs
}

func TestStaticCertificateBySNI(t *testing.T) {
	certs := staticCerts(t, "app.example.com", "*.example.com", "api.example.org")
	for _, tc := range []struct {
		name, unknownSNI, sni, want string
	}{
		{"exact name", config.UnknownSNIReject, "app.example.com", "app.example.com"},
		{"exact name in any case, trailing dot", config.UnknownSNIReject, "API.Example.org.", "api.example.org"},
		{"wildcard covers one label", config.UnknownSNIReject, "shop.example.com", "*.example.com"},
		{"wildcard does not cover two labels, rejected", config.UnknownSNIReject, "a.shop.example.com", ""},
		{"unknown name rejected", config.UnknownSNIReject, "other.test", ""},
		{"no SNI rejected", config.UnknownSNIReject, "", ""},
		{"unknown name gets the first certificate", config.UnknownSNIFirst, "other.test", "app.example.com"},
		{"no SNI gets the first certificate", config.UnknownSNIFirst, "", "app.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(&config.TLS{Certificates: certs, UnknownSNI: tc.unknownSNI}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			got, err := handshake(t, m, tc.sni)
			if tc.want == "" && err == nil {
				t.Errorf("handshake served %q, want a failure", got)
			} else if tc.want != "" && (err != nil || got != tc.want) {
				t.Errorf("served %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}

func TestNewRejectsUnloadedCertificate(t *testing.T) {
	_, err := New(&config.TLS{Certificates: []*config.Certificate{{CertFile: "a.crt"}}}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "was not loaded") {
		t.Errorf("New = %v, want an error about the unloaded certificate", err)
	}
}

// acmeManager returns a manager whose ACME directory is dir, for hosts.
func acmeManager(t *testing.T, dir string, logs *testlog.Buffer, hosts ...string) *Manager {
	t.Helper()
	tc := &config.TLS{
		Certificates: staticCerts(t, "static.example.com"),
		UnknownSNI:   config.UnknownSNIReject,
		ACME: config.ACME{
			Enabled: true, Email: "ops@example.com", Directory: dir,
			CacheDir: filepath.Join(t.TempDir(), "acme"), Hosts: hosts,
		},
	}
	m, err := New(tc, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A name that is not an ACME host never reaches the CA: nobody can make
// Portico order certificates for names of their choosing.
func TestUnknownNameNeverContactsTheCA(t *testing.T) {
	var requests atomic.Int64
	ca := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		http.NotFound(w, nil) // a 5xx would be retried for seconds
	}))
	defer ca.Close()
	m := acmeManager(t, ca.URL+"/directory", &testlog.Buffer{}, "acme.example.com")

	for _, name := range []string{"evil.example.com", "static.example.com", "", "acme.example.com.evil.test"} {
		_, _ = handshake(t, m, name)
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("%d requests to the CA for names that are not ACME hosts", n)
	}
	// The counter works: an ACME host does reach the CA.
	if _, err := handshake(t, m, "acme.example.com"); err == nil {
		t.Error("handshake for an ACME host succeeded with the CA down")
	}
	if requests.Load() == 0 {
		t.Error("an ACME host did not reach the CA")
	}
}

func TestUnreachableCAIsLoggedAndRetriedWhileStaticHostsServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "https://" + ln.Addr().String() + "/directory"
	_ = ln.Close()
	logs := &testlog.Buffer{}
	m := acmeManager(t, closed, logs, "acme.example.com")
	m.retryMin, m.retryMax = 10*time.Millisecond, 40*time.Millisecond
	ctx := t.Context()
	m.Start(ctx)

	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(logs.String(), "ACME certificate not obtained; retrying") < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := strings.Count(logs.String(), "ACME certificate not obtained; retrying"); n < 3 {
		t.Fatalf("%d retries logged, want at least 3; log:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "host=acme.example.com") {
		t.Errorf("the failing host is not named in the log:\n%s", logs.String())
	}
	if got, err := handshake(t, m, "static.example.com"); err != nil || got != "static.example.com" {
		t.Errorf("static host while the CA is down: %q, %v", got, err)
	}
	infos := m.Certificates()
	if len(infos) != 1 || infos[0].Source != "static" || infos[0].NotAfter.Before(time.Now()) {
		t.Errorf("Certificates() = %+v, want the static one with its expiry", infos)
	}
}

func TestHTTPHandlerPassesNonChallengesOn(t *testing.T) {
	m := acmeManager(t, "https://127.0.0.1:1/directory", &testlog.Buffer{}, "acme.example.com")
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	var cur Current
	h := cur.HTTPHandler(next)
	req := httptest.NewRequest("GET", "/.well-known/acme-challenge/token", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusTeapot {
		t.Errorf("no manager in service: %d, want the request passed on", rec.Code)
	}
	cur.Store(m)
	for path, want := range map[string]int{
		"/":                                 http.StatusTeapot,
		"/.well-known/other":                http.StatusTeapot,
		"/.well-known/acme-challenge/token": http.StatusNotFound, // autocert: no such token
	} {
		req := httptest.NewRequest("GET", path, nil)
		req.Host = "acme.example.com:8080"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("%s: %d, want %d", path, rec.Code, want)
		}
	}
}

// A reload's manager serves replaced and added static certificates, stops
// serving removed names, and keeps the ACME client when the account
// settings stay.
func TestNextManagerFollowsTheReloadedTable(t *testing.T) {
	ca := testcert.NewCA(t)
	pair := func(names ...string) *config.Certificate {
		p := ca.Valid(t, names...)
		return &config.Certificate{CertFile: names[0] + ".crt", Loaded: &p.TLS}
	}
	caSrv := httptest.NewServer(http.NotFoundHandler())
	defer caSrv.Close()
	acmeOn := func(hosts ...string) config.ACME {
		return config.ACME{Enabled: true, Email: "ops@example.com", Directory: caSrv.URL + "/directory",
			CacheDir: filepath.Join(t.TempDir(), "acme"), Hosts: hosts}
	}
	first := pair("app.example.com")
	a1 := acmeOn("old.example.com")
	m1, err := New(&config.TLS{Certificates: []*config.Certificate{first, pair("gone.example.com")}, UnknownSNI: config.UnknownSNIReject, ACME: a1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var cur Current
	cur.Store(m1)
	m1.Start(t.Context())
	serial := func(name string) string {
		t.Helper()
		cs, ss := net.Pipe()
		defer cs.Close()
		defer ss.Close()
		go func() { _ = tls.Server(ss, cur.TLSConfig()).Handshake() }()
		c := tls.Client(cs, &tls.Config{ServerName: name, InsecureSkipVerify: true})
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := c.Handshake(); err != nil {
			return "refused"
		}
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial("app.example.com")
	if before != first.Loaded.Leaf.SerialNumber.String() || serial("gone.example.com") == "refused" {
		t.Fatalf("first manager: app %s, gone %s", before, serial("gone.example.com"))
	}

	renewed, added := pair("app.example.com"), pair("new.example.com")
	a2 := a1
	a2.Hosts = []string{"fresh.example.com"}
	m2, err := m1.Next(&config.TLS{Certificates: []*config.Certificate{renewed, added}, UnknownSNI: config.UnknownSNIReject, ACME: a2})
	if err != nil {
		t.Fatal(err)
	}
	if m2.acme != m1.acme {
		t.Error("ACME client replaced though the account settings did not change")
	}
	if got := serial("app.example.com"); got != before {
		t.Errorf("the new manager was used before it was stored: %s", got)
	}
	cur.Store(m2)
	m2.Start(t.Context())
	if got := serial("app.example.com"); got != renewed.Loaded.Leaf.SerialNumber.String() {
		t.Errorf("replaced certificate: served serial %s, want the new one", got)
	}
	if got := serial("new.example.com"); got != added.Loaded.Leaf.SerialNumber.String() {
		t.Errorf("added certificate: served %s", got)
	}
	if got := serial("gone.example.com"); got != "refused" {
		t.Errorf("removed name still served: %s", got)
	}
	if got := serial("old.example.com"); got != "refused" {
		t.Errorf("removed ACME host still served: %s", got)
	}
	if err := m2.acme.mgr.HostPolicy(t.Context(), "fresh.example.com"); err != nil {
		t.Errorf("new ACME host not allowed after Start: %v", err)
	}
	if err := m2.acme.mgr.HostPolicy(t.Context(), "old.example.com"); err == nil {
		t.Error("removed ACME host still allowed to order")
	}

	a3 := a2
	a3.Email = "other@example.com"
	m3, err := m2.Next(&config.TLS{Certificates: []*config.Certificate{renewed}, ACME: a3})
	if err != nil {
		t.Fatal(err)
	}
	if m3.acme == m2.acme {
		t.Error("ACME client kept though the account email changed")
	}
}
