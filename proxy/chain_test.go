package proxy

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portico/portico/accesslog"
	"github.com/portico/portico/config"
	"github.com/portico/portico/internal/promtest"
	"github.com/portico/portico/internal/testlog"
	"github.com/portico/portico/metrics"
)

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
[middlewares.v2]
type = "rewrite"
path_regex = "^/v1/"
replacement = "/v2/"
[pools.down]
backends = [{ url = "${down}" }, { url = "${down2}" }]
retries = 1
[[routes]]
host = "app.test"
pool = "p"
[[routes]]
host = "app.test"
path_prefix = "/denied"
pool = "p"
middlewares = ["deny"]
[[routes]]
host = "app.test"
path_prefix = "/v1"
pool = "p"
middlewares = ["v2"]
[[routes]]
host = "down.test"
pool = "down"
`, map[string]string{"be": be.URL, "down": closedURL(t), "down2": closedURL(t)})
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
	for _, tc := range []struct{ host, path string }{{"app.test", "/"}, {"app.test", "/denied"}, {"other.test", "/"}, {"down.test", "/"}, {"app.test", "/v1/x"}} {
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
	}{{"app.test", 200, "app.test/"}, {"app.test", 403, "app.test/denied"}, {"other.test", 404, ""}, {"down.test", 502, "down.test/"}, {"app.test", 200, "app.test/v1"}}
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(got), len(want), lines.String())
	}
	for i, w := range want {
		if got[i]["host"] != w.host || got[i]["status"] != w.status || got[i]["route"] != w.route || got[i]["client_ip"] != "127.0.0.1" {
			t.Errorf("line %d: %v; want host %s status %v route %q", i, got[i], w.host, w.status, w.route)
		}
	}
	// The failed backend and the retry are logged with the request's ID.
	id, _ := got[3]["request_id"].(string)
	for _, msg := range []string{"retrying on another backend", "backend request failed"} {
		if id == "" || !strings.Contains(logs.String(), `"msg":"`+msg+`","request_id":"`+id+`"`) {
			t.Errorf("log line %q does not carry request ID %q:\n%s", msg, id, logs.String())
		}
	}
	// The access log shows the path the client asked for, not the rewrite.
	if got[4]["path"] != "/v1/x" {
		t.Errorf("rewritten request logged as %v", got[4]["path"])
	}
}

// A response cut short (the backend closed mid-body, so the proxy breaks
// the client's connection rather than pass a truncated body off as whole)
// still gets its access-log line and is counted in the metrics, with the
// bytes that went out. (The abort used to unwind past both.)
func TestAbortedResponseIsLoggedAndCounted(t *testing.T) {
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		conn, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		_, _ = bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
		_ = bw.Flush()
		_ = conn.Close()
	})
	cfg := parseConfig(t, `
[pools.p]
backends = [{ url = "${be}" }]
retries = 0
[[routes]]
name = "cut"
pool = "p"
`, map[string]string{"be": be.URL})
	var lines testlog.Buffer
	access := accesslog.New(&lines, accesslog.JSON, false, nil)
	m := metrics.New("test")
	snap, err := NewSnapshot(cfg, discardLog, WithAccessLog(access), WithMetrics(m))
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	front := httptest.NewServer(NewHandler(snap))
	defer front.Close()
	// The head may still be in the server's buffer when the connection
	// breaks: the client sees the break at once, or in the body.
	res, err := newClient(t).Do(newRequest(t, http.MethodGet, front.URL+"/cut", nil))
	if err == nil {
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	if err == nil {
		t.Error("the client read a truncated body as a whole one")
	}
	waitNoInFlight(t, snap)
	_ = access.Close()

	var line map[string]any
	if err := json.Unmarshal([]byte(lines.String()), &line); err != nil {
		t.Fatalf("access log %q: %v", lines.String(), err)
	}
	if line["path"] != "/cut" || line["route"] != "cut" || line["status"] != 200.0 || line["bytes_out"] != float64(len("only this")) {
		t.Errorf("access-log line %v, want /cut on route cut, 200, %d bytes out", line, len("only this"))
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	if n := promtest.Sum(mfs, "portico_requests_total", "route", "cut"); n != 1 {
		t.Errorf("portico_requests_total{route=\"cut\"} = %v, want 1", n)
	}
}

// BenchmarkProxyChain compares the proxied request bare and through the
// chain the issue measures: request_id + api_key + rate_limit (never
// reached) + an access log to a file.
func BenchmarkProxyChain(b *testing.B) {
	body := strings.Repeat("x", 100)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(body)) }))
	defer be.Close()
	for _, bc := range []struct {
		name, chain string
		accessLog   bool
	}{
		{"bare", "", false},
		{"access_log", "", true},
		{"request_id+api_key+rate_limit", `"rid", "key", "limit"`, false},
		{"request_id+api_key+rate_limit+access_log", `"rid", "key", "limit"`, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
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
middlewares = [` + bc.chain + `]
`
			cfg, err := config.Parse([]byte(doc), "bench.toml")
			if err != nil {
				b.Fatal(err)
			}
			var opts []Option
			if bc.accessLog {
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
