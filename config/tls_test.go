package config

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/portico/portico/internal/testcert"
)

// tlsFiles are real PEM files for the TLS cases, made fresh per test run.
type tlsFiles struct {
	cert, key        string // a valid pair for app.example.com
	otherKey         string // a key that does not match cert
	expired, expKey  string // a pair that expired yesterday
	notPEM, ca       string
	notDir, writable string
}

func newTLSFiles(t *testing.T) tlsFiles {
	t.Helper()
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	var f tlsFiles
	f.cert, f.key = ca.Valid(t, "app.example.com").WriteFiles(t, dir, "app")
	_, f.otherKey = ca.Valid(t, "other.example.com").WriteFiles(t, dir, "other")
	f.expired, f.expKey = ca.Issue(t, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour), "old.example.com").WriteFiles(t, dir, "old")
	f.notPEM = filepath.Join(dir, "not.pem")
	f.ca = filepath.Join(dir, "ca.pem")
	for path, data := range map[string][]byte{f.notPEM: []byte("hello\n"), f.ca: ca.PEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f.notDir = filepath.Join(f.notPEM, "acme") // under a regular file: never a directory, even for root
	f.writable = filepath.Join(dir, "acme", "cache")
	return f
}

func TestParseTLSProblems(t *testing.T) {
	f := newTLSFiles(t)
	cert := func(c, k string) []string {
		return ls(`[[tls.certificates]]`, fmt.Sprintf(`cert_file = %q`, c), fmt.Sprintf(`key_file = %q`, k))
	}
	https := ls(`[server]`, `https_addr = ":443"`)
	acme := func(l ...string) []string { return lines(ls(`[tls.acme]`, `enabled = true`), l) }
	hostRoute := ls(`[[routes]]`, `host = "app.example.com"`, `pool = "app"`)
	runProblemCases(t, []problemCase{
		{name: "https_addr without certificates", lines: tail(https...),
			want: []want{{2, "server.https_addr", "HTTPS needs certificates"}}},
		{name: "certificates without https_addr", lines: tail(cert(f.cert, f.key)...),
			want: []want{{1, "tls.certificates", "need an HTTPS listener"}}},
		{name: "unreadable cert and key files", lines: tail(lines(https, cert("/nonexistent/a.crt", "/nonexistent/a.key"))...),
			want: []want{
				{4, "tls.certificates[0].cert_file", "cannot read: no such file or directory"},
				{5, "tls.certificates[0].key_file", "cannot read: no such file or directory"},
			}},
		{name: "cert_file not PEM", lines: tail(lines(https, cert(f.notPEM, f.key))...),
			want: []want{{4, "tls.certificates[0].cert_file", "does not start with a PEM certificate"}}},
		{name: "key of another certificate", lines: tail(lines(https, cert(f.cert, f.otherKey))...),
			want: []want{{5, "tls.certificates[0].key_file", "private key does not match public key"}}},
		{name: "missing key_file", lines: tail(lines(https, ls(`[[tls.certificates]]`, fmt.Sprintf(`cert_file = %q`, f.cert)))...),
			want: []want{{3, "tls.certificates[0].key_file", "missing"}}},
		{name: "expired certificate is a warning beside an error", lines: tail(lines(https, cert(f.expired, f.expKey), ls(`[tls]`, `unknown_sni = "maybe"`))...),
			want: []want{
				{4, "tls.certificates[0].cert_file", "warning: certificate expired on"},
				{7, "tls.unknown_sni", `unknown value "maybe"`},
			}},
		{name: "ACME without email", lines: lines(https, acme(fmt.Sprintf(`cache_dir = %q`, f.writable)), okPool, hostRoute),
			want: []want{{3, "tls.acme.email", "missing"}}},
		{name: "ACME without hosts and no route hosts", lines: lines(https, acme(`email = "ops@example.com"`, fmt.Sprintf(`cache_dir = %q`, f.writable)), okPool, okRoute),
			want: []want{{3, "tls.acme.hosts", "no hosts to get certificates for"}}},
		{name: "ACME wildcard, IP and bare hosts", lines: lines(https, acme(`email = "ops@example.com"`, fmt.Sprintf(`cache_dir = %q`, f.writable), `hosts = ["*.example.com", "10.0.0.1", "localhost"]`), okPool, okRoute),
			want: []want{
				{7, "tls.acme.hosts[0]", "cannot issue wildcard certificates"},
				{7, "tls.acme.hosts[1]", "an IP address"},
				{7, "tls.acme.hosts[2]", "not a DNS name with a domain"},
			}},
		{name: "ACME cache dir not writable", lines: lines(https, acme(`email = "ops@example.com"`, fmt.Sprintf(`cache_dir = %q`, f.notDir)), okPool, hostRoute),
			want: []want{{6, "tls.acme.cache_dir", "is not a writable directory"}}},
		{name: "ACME bad directory, email and ca_root", lines: lines(https, acme(`email = "ops"`, `directory = "http://ca.test/dir"`, fmt.Sprintf(`ca_root = %q`, f.notPEM), fmt.Sprintf(`cache_dir = %q`, f.writable)), okPool, hostRoute),
			want: []want{
				{5, "tls.acme.email", `"ops" is not an email address`},
				{6, "tls.acme.directory", "want the https URL"},
				{7, "tls.acme.ca_root", "holds no PEM certificate"},
			}},
		{name: "HTTP/2 limits out of range", lines: tail(`[server.http2]`, `max_concurrent_streams = 0`, `max_read_frame_size = 1024`, `idle_timeout = "long"`),
			want: []want{
				{2, "server.http2.max_concurrent_streams", "must be between 1 and 1000, got 0"},
				{3, "server.http2.max_read_frame_size", "must be between 16384 and 16777215, got 1024"},
				{4, "server.http2.idle_timeout", `invalid duration "long"`},
			}},
		{name: "redirect_http without https_addr", lines: tail(`[server]`, `redirect_http = true`),
			want: []want{{2, "server.redirect_http", "needs server.https_addr"}}},
		{name: "TLS keys on an http pool", lines: lines(okPool, ls(`tls_server_name = "x.test"`, `tls_insecure_skip_verify = true`), okRoute),
			want: []want{
				{3, "pools.app.tls_server_name", "applies to https:// backends only"},
				{4, "pools.app.tls_insecure_skip_verify", "applies to https:// backends only"},
			}},
		{name: "mixed schemes in a pool", lines: lines(ls(`[pools.app]`, `backends = [{ url = "https://10.0.0.1" },`, `  { url = "h2c://10.0.0.2:9000" }]`), okRoute),
			want: []want{{3, "pools.app.backends[1].url", `scheme "h2c" differs from backends[0] ("https")`}}},
		{name: "unreadable tls_ca_file", lines: lines(ls(`[pools.app]`, `backends = [{ url = "https://10.0.0.1" }]`, `tls_ca_file = "/nonexistent/ca.pem"`), okRoute),
			want: []want{{3, "pools.app.tls_ca_file", "cannot read"}}},
	})
}

func TestParseTLSDefaultsAndLoadedValues(t *testing.T) {
	f := newTLSFiles(t)
	cfg := parseOK(t, doc(
		`[server]`,
		`https_addr = ":443"`,
		`[[tls.certificates]]`,
		fmt.Sprintf(`cert_file = %q`, f.cert),
		fmt.Sprintf(`key_file = %q`, f.key),
		`[tls.acme]`,
		`enabled = true`,
		`email = "ops@example.com"`,
		fmt.Sprintf(`cache_dir = %q`, f.writable),
		`[pools.app]`,
		`backends = [{ url = "https://10.0.0.1" }, { url = "https://backend.internal:8443" }]`,
		fmt.Sprintf(`tls_ca_file = %q`, f.ca),
		`[pools.grpc]`,
		`backends = [{ url = "h2c://10.0.0.2" }]`,
		`[[routes]]`,
		`host = "App.Example.com"`,
		`pool = "app"`,
		`[[routes]]`,
		`host = "*.example.com"`,
		`pool = "app"`,
		`[[routes]]`,
		`host = "grpc.example.com"`,
		`pool = "grpc"`,
	))
	s, app := cfg.Server, cfg.Pools["app"]
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"redirect_http", s.RedirectHTTP, true},
		{"h2c", s.H2C, false},
		{"http2.max_concurrent_streams", s.HTTP2.MaxConcurrentStreams, 250},
		{"http2.max_read_frame_size", s.HTTP2.MaxReadFrameSize, 1 << 20},
		{"http2.idle_timeout", s.HTTP2.IdleTimeout.Duration, 120 * time.Second},
		{"unknown_sni", cfg.TLS.UnknownSNI, UnknownSNIFirst},
		{"acme.directory", cfg.TLS.ACME.Directory, DefaultACMEDirectory},
		{"acme.hosts", fmt.Sprint(cfg.TLS.ACME.Hosts), "[app.example.com grpc.example.com]"},
		{"certificate loaded", cfg.TLS.Certificates[0].Loaded != nil && cfg.TLS.Certificates[0].Loaded.Leaf.DNSNames[0] == "app.example.com", true},
		{"pool scheme", app.Scheme, SchemeHTTPS},
		{"https default port", app.Backends[0].Parsed.Host, "10.0.0.1:443"},
		{"https explicit port", app.Backends[1].Parsed.Host, "backend.internal:8443"},
		{"tls_ca_file loaded", app.RootCAs != nil, true},
		{"h2c scheme", cfg.Pools["grpc"].Backends[0].Parsed.String(), "h2c://10.0.0.2:80"},
		{"no warnings", len(cfg.Warnings), 0},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if _, err := os.Stat(f.writable); err == nil {
		t.Errorf("validation created cache_dir %s; it must leave the disk as it found it", f.writable)
	}
}

func TestParseExpiredCertificateIsOnlyAWarning(t *testing.T) {
	f := newTLSFiles(t)
	cfg := parseOK(t, doc(
		`[server]`,
		`https_addr = ":443"`,
		`[[tls.certificates]]`,
		fmt.Sprintf(`cert_file = %q`, f.expired),
		fmt.Sprintf(`key_file = %q`, f.expKey),
		okPool[0], okPool[1], okRoute[0], okRoute[1],
	))
	if len(cfg.Warnings) != 1 {
		t.Fatalf("warnings = %v, want one", cfg.Warnings)
	}
	w := cfg.Warnings[0]
	if w.Line != 4 || w.Key != "tls.certificates[0].cert_file" || w.Msg[:len("warning: certificate expired on")] != "warning: certificate expired on" {
		t.Errorf("warning = %v", w)
	}
}
