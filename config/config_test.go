package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// doc joins lines into a TOML document, so that a case's line numbers can be
// read off the order of its arguments (the first argument is line 1).
func doc(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

// parseOK parses src and fails the test on any error.
func parseOK(t *testing.T, src string) *Config {
	t.Helper()
	cfg, err := Parse([]byte(src), "test.toml")
	if err != nil {
		t.Fatalf("Parse: unexpected error:\n%v\ndocument:\n%s", err, src)
	}
	return cfg
}

// problemsOf returns err as Problems, failing the test if it is anything else.
func problemsOf(t *testing.T, err error) Problems {
	t.Helper()
	if err == nil {
		t.Fatal("Parse: want an error, got none")
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("Parse: error is %T (%v), want config.Problems", err, err)
	}
	return ps
}

func TestLoadExampleConfigIsValid(t *testing.T) {
	cfg, err := Load("../config.example.toml")
	if err != nil {
		t.Fatalf("Load(config.example.toml): %v", err)
	}
	if cfg.File != "../config.example.toml" {
		t.Errorf("File = %q, want the path given to Load", cfg.File)
	}
	if got, want := cfg.Server.HTTPSAddr, ":443"; got != want {
		t.Errorf("https_addr = %q, want %q", got, want)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}; fmt.Sprint(cfg.Server.Trusted) != fmt.Sprint(want) {
		t.Errorf("Trusted = %v, want %v", cfg.Server.Trusted, want)
	}
	if len(cfg.Pools) != 2 || cfg.Pools["app"] == nil || cfg.Pools["api"] == nil {
		t.Fatalf("pools = %v, want app and api", cfg.Pools)
	}
	app := cfg.Pools["app"]
	if len(app.Backends) != 2 || app.Backends[0].Weight != 3 || app.Backends[1].Weight != 1 {
		t.Errorf("app backends/weights wrong: %+v %+v", app.Backends[0], app.Backends[1])
	}
	if got := app.Backends[0].Parsed.String(); got != "http://10.0.0.1:8080" {
		t.Errorf("app.backends[0].Parsed = %q", got)
	}
	if got := cfg.Pools["api"].Balance; got != LeastConn {
		t.Errorf("api balance = %q, want %q", got, LeastConn)
	}
	if len(cfg.Routes) != 3 || cfg.Routes[1].PathPrefix != "/api" || !cfg.Routes[1].StripPrefix || cfg.Routes[1].Pool != "api" {
		t.Errorf("routes wrong: %+v", cfg.Routes)
	}
}

func TestLoadMissingFileIsPathError(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "absent.toml"))
	var pe *os.PathError
	if !errors.As(err, &pe) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load(absent) error = %v (%T), want *os.PathError not-exist", err, err)
	}
}

func TestLoadReadsFileAndNamesItInProblems(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.toml")
	if err := os.WriteFile(path, []byte(doc(`bogus = 1`)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	ps := problemsOf(t, err)
	for _, p := range ps {
		if p.File != path {
			t.Errorf("problem %v: File = %q, want %q", p, p.File, path)
		}
	}
}

func TestParseAppliesDefaults(t *testing.T) {
	cfg := parseOK(t, doc(
		`[pools.app]`,
		`backends = [{ url = "http://10.0.0.1:8080" }]`,
		`[[routes]]`,
		`pool = "app"`,
	))
	s := cfg.Server
	checks := []struct {
		name      string
		got, want any
	}{
		{"http_addr", s.HTTPAddr, ":80"},
		{"https_addr", s.HTTPSAddr, ""},
		{"admin_addr", s.AdminAddr, "127.0.0.1:9090"},
		{"read_header_timeout", s.ReadHeaderTimeout.Duration, 10 * time.Second},
		{"idle_timeout", s.IdleTimeout.Duration, 120 * time.Second},
		{"max_header_bytes", s.MaxHeaderBytes, 65536},
		{"shutdown_timeout", s.ShutdownTimeout.Duration, 30 * time.Second},
		{"trusted", len(s.Trusted), 0},
		{"log.level", cfg.Log.Level, "info"},
		{"log.format", cfg.Log.Format, "json"},
		{"log.access_log", cfg.Log.AccessLog, "stdout"},
		{"balance", cfg.Pools["app"].Balance, "round_robin"},
		{"dial_timeout", cfg.Pools["app"].DialTimeout.Duration, 2 * time.Second},
		{"response_header_timeout", cfg.Pools["app"].ResponseHeaderTimeout.Duration, 30 * time.Second},
		{"max_idle_conns_per_backend", cfg.Pools["app"].MaxIdleConnsPerBackend, 128},
		{"retries", cfg.Pools["app"].Retries, 2},
		{"weight", cfg.Pools["app"].Backends[0].Weight, 1},
		{"path_prefix", cfg.Routes[0].PathPrefix, "/"},
		{"strip_prefix", cfg.Routes[0].StripPrefix, false},
		{"host", cfg.Routes[0].Host, ""},
		{"route name", cfg.Routes[0].Name, "/"},
		{"max_header_count", s.MaxHeaderCount, 100},
		{"max_conns", s.MaxConns, 0},
		{"max_conns_per_ip", s.MaxConnsPerIP, 0},
		{"max_response_header_bytes", cfg.Pools["app"].MaxResponseHeaderBytes, 65536},
		{"max_body_bytes", cfg.Routes[0].MaxBodyBytes, int64(0)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want default %v", c.name, c.got, c.want)
		}
	}
}

func TestParseKeepsExplicitValues(t *testing.T) {
	cfg := parseOK(t, doc(
		`[server]`,
		`http_addr = "127.0.0.1:8080"`,
		`admin_addr = "off"`,
		`read_header_timeout = "1s"`,
		`idle_timeout = "0s"`,
		`max_header_bytes = 1024`,
		`max_header_count = 7`,
		`max_conns = 1000`,
		`max_conns_per_ip = 10`,
		`shutdown_timeout = "1m30s"`,
		`[log]`,
		`level = "debug"`,
		`format = "text"`,
		`access_log = "off"`,
		`[pools.app]`,
		`balance = "least_conn"`,
		`backends = [{ url = "http://10.0.0.1:8080", weight = 1000 }]`,
		`dial_timeout = "500ms"`,
		`max_idle_conns_per_backend = 1`,
		`retries = 10`,
		`max_response_header_bytes = 1024`,
		`[[routes]]`,
		`host = "*.example.com"`,
		`path_prefix = "/api"`,
		`strip_prefix = true`,
		`pool = "app"`,
		`max_body_bytes = 10485760`,
	))
	s, p, r := cfg.Server, cfg.Pools["app"], cfg.Routes[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"http_addr", s.HTTPAddr, "127.0.0.1:8080"},
		{"admin_addr", s.AdminAddr, Off},
		{"read_header_timeout", s.ReadHeaderTimeout.Duration, time.Second},
		{"idle_timeout", s.IdleTimeout.Duration, time.Duration(0)},
		{"max_header_bytes", s.MaxHeaderBytes, 1024},
		{"max_header_count", s.MaxHeaderCount, 7},
		{"max_conns", s.MaxConns, 1000},
		{"max_conns_per_ip", s.MaxConnsPerIP, 10},
		{"max_response_header_bytes", p.MaxResponseHeaderBytes, 1024},
		{"max_body_bytes", r.MaxBodyBytes, int64(10 << 20)},
		{"shutdown_timeout", s.ShutdownTimeout.Duration, 90 * time.Second},
		{"log.level", cfg.Log.Level, "debug"},
		{"log.format", cfg.Log.Format, "text"},
		{"log.access_log", cfg.Log.AccessLog, Off},
		{"balance", p.Balance, LeastConn},
		{"weight", p.Backends[0].Weight, 1000},
		{"dial_timeout", p.DialTimeout.Duration, 500 * time.Millisecond},
		{"max_idle_conns_per_backend", p.MaxIdleConnsPerBackend, 1},
		{"retries", p.Retries, 10},
		{"host", r.Host, "*.example.com"},
		{"path_prefix", r.PathPrefix, "/api"},
		{"strip_prefix", r.StripPrefix, true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// A per-client cap above the total cap can never apply: a warning, not an error.
func TestParseMaxConnsPerIPAboveMaxConnsIsAWarning(t *testing.T) {
	cfg := parseOK(t, doc(lines(ls(`[server]`, `max_conns = 10`, `max_conns_per_ip = 20`), okPool, okRoute)...))
	if len(cfg.Warnings) != 1 || cfg.Warnings[0].Line != 3 || cfg.Warnings[0].Key != "server.max_conns_per_ip" ||
		!strings.Contains(cfg.Warnings[0].Msg, "never applies") {
		t.Errorf("warnings = %v, want one for server.max_conns_per_ip on line 3", cfg.Warnings)
	}
}

func TestParseExplicitRetriesZeroStaysZero(t *testing.T) {
	cfg := parseOK(t, doc(
		`[pools.app]`,
		`backends = [{ url = "http://10.0.0.1:8080" }]`,
		`retries = 0`,
		`[[routes]]`,
		`pool = "app"`,
	))
	if got := cfg.Pools["app"].Retries; got != 0 {
		t.Fatalf("retries = %d, want the explicit 0", got)
	}
}

func TestParseTrustedProxiesAcceptsCIDRsAndBareAddresses(t *testing.T) {
	cfg := parseOK(t, doc(
		`[server]`,
		`trusted_proxies = [`,
		`  "10.0.0.0/8",`,
		`  "192.168.1.77/24",`,
		`  "203.0.113.9",`,
		`  "::1",`,
		`  "2001:db8::/32",`,
		`  "::ffff:198.51.100.7",`,
		`  "::ffff:172.16.0.0/108",`,
		`]`,
		`[pools.app]`,
		`backends = [{ url = "http://10.0.0.1:8080" }]`,
		`[[routes]]`,
		`pool = "app"`,
	))
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.168.1.0/24"), // masked
		netip.MustParsePrefix("203.0.113.9/32"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("198.51.100.7/32"), // IPv4-mapped address unmapped
		// An IPv4-mapped prefix too: client addresses are compared unmapped,
		// so left mapped it would never match.
		netip.MustParsePrefix("172.16.0.0/12"),
	}
	got := cfg.Server.Trusted
	if len(got) != len(want) {
		t.Fatalf("Trusted = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Trusted[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestParseBackendURLWithoutPortGetsPort80(t *testing.T) {
	cfg := parseOK(t, doc(
		`[pools.app]`,
		`backends = [`,
		`  { url = "http://10.0.0.1" },`,
		`  { url = "http://backend.internal/" },`,
		`  { url = "http://[2001:db8::1]" },`,
		`  { url = "http://10.0.0.2:8080" },`,
		`]`,
		`[[routes]]`,
		`pool = "app"`,
	))
	want := []string{"10.0.0.1:80", "backend.internal:80", "[2001:db8::1]:80", "10.0.0.2:8080"}
	for i, b := range cfg.Pools["app"].Backends {
		if b.Parsed == nil {
			t.Errorf("backends[%d].Parsed is nil", i)
			continue
		}
		if b.Parsed.Scheme != "http" || b.Parsed.Host != want[i] || b.Parsed.Path != "" {
			t.Errorf("backends[%d].Parsed = %q, want http://%s", i, b.Parsed, want[i])
		}
	}
}

// The admin listener may face the network only with a token; loopback
// needs none.
func TestAdminAddrLoopbackOrToken(t *testing.T) {
	for _, server := range [][]string{
		{`admin_addr = "127.0.0.1:9090"`},
		{`admin_addr = "127.1.2.3:9090"`},
		{`admin_addr = "[::1]:9090"`},
		{`admin_addr = "localhost:9090"`},
		{`admin_addr = "off"`},
		{`admin_addr = ":9090"`, `admin_token = "0123456789abcdef"`},
	} {
		cfg := parseOK(t, doc(lines(append([]string{`[server]`}, server...), okPool, okRoute)...))
		if cfg.Server.AdminPprof {
			t.Errorf("%v: admin_pprof defaults to true", server)
		}
	}
}

// The admin token never shows when a configuration is printed or encoded,
// and the checksum identifies the document.
func TestAdminTokenIsRedactedAndChecksumIsSet(t *testing.T) {
	const token = "s3cret-t0ken-0123456789"
	src := doc(lines(ls(`[server]`, `admin_addr = ":9090"`, `admin_token = "`+token+`"`, `admin_pprof = true`), okPool, okRoute)...)
	cfg := parseOK(t, src)
	if string(cfg.Server.AdminToken) != token || !cfg.Server.AdminPprof {
		t.Fatalf("admin_token = %q, admin_pprof = %v", string(cfg.Server.AdminToken), cfg.Server.AdminPprof)
	}
	var encoded strings.Builder
	if err := toml.NewEncoder(&encoded).Encode(cfg.Server); err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(cfg.Server)
	for name, out := range map[string]string{
		"%v": fmt.Sprintf("%v", cfg.Server), "%+v": fmt.Sprintf("%+v", cfg.Server), "%#v": fmt.Sprintf("%#v", cfg.Server),
		"json": string(js), "toml": encoded.String(),
	} {
		if strings.Contains(out, token) || !strings.Contains(out, "REDACTED") {
			t.Errorf("%s shows the token or no REDACTED: %s", name, out)
		}
	}
	sum := sha256.Sum256([]byte(src))
	if cfg.Checksum != hex.EncodeToString(sum[:]) {
		t.Errorf("Checksum = %q, want the document's SHA-256", cfg.Checksum)
	}
}
