package proxy

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/portico/portico/accesslog"
	"github.com/portico/portico/config"
	"github.com/portico/portico/internal/testlog"
)

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	for _, tc := range []struct {
		name, remote string
		xff          []string
		want         string
		trustedPeer  bool
	}{
		{"untrusted peer, no header", "192.0.2.1:5000", nil, "192.0.2.1", false},
		{"untrusted peer spoofing", "192.0.2.1:5000", []string{"10.0.0.1, 203.0.113.9"}, "192.0.2.1", false},
		{"trusted peer, no header", "10.0.0.5:5000", nil, "10.0.0.5", true},
		{"trusted peer", "10.0.0.5:5000", []string{"203.0.113.9"}, "203.0.113.9", true},
		{"right-most untrusted", "10.0.0.5:5000", []string{"198.51.100.1, 203.0.113.9, 10.0.0.7"}, "203.0.113.9", true},
		{"several header lines", "10.0.0.5:5000", []string{"198.51.100.1", "203.0.113.9, 10.0.0.7"}, "203.0.113.9", true},
		{"all trusted", "10.0.0.5:5000", []string{"10.1.1.1, 10.0.0.7"}, "10.1.1.1", true},
		{"garbage stops at the last known hop", "10.0.0.5:5000", []string{"203.0.113.9, junk, 10.0.0.7"}, "10.0.0.7", true},
		{"entries with ports and brackets", "10.0.0.5:5000", []string{"[2001:db8::9]:443, 203.0.113.9:80"}, "203.0.113.9", true},
		{"IPv6 peer", "[2001:db8::1]:443", []string{"2001:db9::5"}, "2001:db9::5", true},
		{"mapped IPv4 peer", "[::ffff:10.0.0.5]:80", []string{" 203.0.113.9 "}, "203.0.113.9", true},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		if tc.xff != nil {
			r.Header["X-Forwarded-For"] = tc.xff
		}
		got, tp := clientIP(r, trusted)
		if got.String() != tc.want || tp != tc.trustedPeer {
			t.Errorf("%s: got %v (trusted peer %v), want %s (%v)", tc.name, got, tp, tc.want, tc.trustedPeer)
		}
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "10.0.0.5:5000"
	r.Header["X-Forwarded-For"] = []string{"198.51.100.1, 203.0.113.9, 10.0.0.7"}
	if n := testing.AllocsPerRun(100, func() { clientIP(r, trusted) }); n != 0 {
		t.Errorf("clientIP allocates %v times", n)
	}
}

// Every request gets an access-log line once its answer is complete:
// forwarded, unrouted (404) and refused by a middleware; and Portico's own
// log line about a failed backend carries the request ID.
func TestAccessLogAndRequestIDInLogs(t *testing.T) {
	be := startBackend(t, textHandler("hello"))
	cfg := parseConfig(t, `
[server]
middlewares = ["rid"]
[middlewares.rid]
type = "request_id"
[middlewares.deny]
type = "ip_filter"
deny = ["127.0.0.0/8"]
[pools.p]
backends = [{ url = "${be}" }]
[pools.down]
backends = [{ url = "${down}" }]
retries = 0
[[routes]]
host = "app.test"
pool = "p"
[[routes]]
host = "app.test"
path_prefix = "/denied"
pool = "p"
middlewares = ["deny"]
[[routes]]
host = "down.test"
pool = "down"
`, map[string]string{"be": be.URL, "down": closedURL(t)})
	var lines testlog.Buffer
	access := accesslog.New(&lines, accesslog.JSON, false, nil)
	var logs testlog.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	snap, err := NewSnapshot(cfg, log, WithAccessLog(access))
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	front := httptest.NewServer(NewHandler(snap))
	defer front.Close()
	c := newClient(t)
	for _, tc := range []struct{ host, path string }{{"app.test", "/"}, {"app.test", "/denied"}, {"other.test", "/"}, {"down.test", "/"}} {
		get(t, c, front.URL+tc.path, tc.host)
	}
	_ = access.Close()
	var got []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(lines.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		got = append(got, m)
	}
	want := []struct {
		host   string
		status float64
		route  string
	}{{"app.test", 200, "app.test/"}, {"app.test", 403, "app.test/denied"}, {"other.test", 404, ""}, {"down.test", 502, "down.test/"}}
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(got), len(want), lines.String())
	}
	for i, w := range want {
		if got[i]["host"] != w.host || got[i]["status"] != w.status || got[i]["route"] != w.route || got[i]["client_ip"] != "127.0.0.1" {
			t.Errorf("line %d: %v; want host %s status %v route %q", i, got[i], w.host, w.status, w.route)
		}
	}
	id, _ := got[3]["request_id"].(string)
	if id == "" || !strings.Contains(logs.String(), `"request_id":"`+id+`"`) {
		t.Errorf("backend failure log line does not carry request ID %q:\n%s", id, logs.String())
	}
}

// BenchmarkProxyChain compares the proxied request bare and through the
// chain the issue measures: request_id + api_key + rate_limit (never
// reached) + an access log to a file.
func BenchmarkProxyChain(b *testing.B) {
	body := strings.Repeat("x", 100)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(body)) }))
	defer be.Close()
	for _, chain := range []string{"", `"rid", "key", "limit"`} {
		name := "bare"
		if chain != "" {
			name = "request_id+api_key+rate_limit+access_log"
		}
		b.Run(name, func(b *testing.B) {
			doc := `
[log]
access_log = "` + b.TempDir() + `/access.log"
[middlewares.rid]
type = "request_id"
[middlewares.key]
type = "api_key"
keys = { bench = "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b" }
[middlewares.limit]
type = "rate_limit"
rate = 1000000000
burst = 1000000
[pools.app]
backends = [{ url = "` + be.URL + `" }]
[[routes]]
pool = "app"
middlewares = [` + chain + `]
`
			cfg, err := config.Parse([]byte(doc), "bench.toml")
			if err != nil {
				b.Fatal(err)
			}
			var opts []Option
			if chain != "" {
				al, err := accesslog.Open(cfg.Log.AccessLog, accesslog.JSON, false, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer al.Close()
				opts = append(opts, WithAccessLog(al))
			}
			snap, err := NewSnapshot(cfg, discardLog, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer snap.Close()
			h := NewHandler(snap)
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest("GET", "http://app.example.com/index.html", nil)
				req.Header.Set("X-Api-Key", "secret") // sha256("secret")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d", rec.Code)
				}
			}
		})
	}
}
