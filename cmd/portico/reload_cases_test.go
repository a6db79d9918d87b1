package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/portico/portico/config"
	"github.com/portico/portico/internal/leakcheck"
	"github.com/portico/portico/internal/testcert"
)

// simpleDoc is a configuration of one pool of the given backends on the
// plain listener addr, with extra [server] keys, and no access log.
func simpleDoc(addr, server string, us ...*upstream) string {
	return fmt.Sprintf(`[server]
http_addr = %q
admin_addr = "127.0.0.1:0"
shutdown_timeout = "5s"
%s
[pools.app]
backends = %s
[[routes]]
pool = "app"
[log]
access_log = "off"
`, addr, server, backendList(us...))
}

// Reloads to a file with a syntax error, to one naming a pool that does not
// exist and to one whose listener port is taken are each refused and
// logged with file, line and reason; the previous configuration serves on.
func TestRefusedReloadsChangeNothing(t *testing.T) {
	be, other := startUpstream(t, "b", answer(0)), startUpstream(t, "other", answer(0))
	r := startRig(t, simpleDoc("127.0.0.1:0", "", be))
	addr := r.in.addrs().http
	before := r.in.running.Load()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	for _, tc := range []struct {
		name, doc string
		problem   *regexp.Regexp
	}{
		{"syntax error", "[server\nhttp_addr = 1\n", regexp.MustCompile(`portico\.toml:\d+:\d+: syntax: `)},
		{"pool that does not exist", strings.Replace(simpleDoc("127.0.0.1:0", "", be), `pool = "app"`, `pool = "nope"`, 1),
			regexp.MustCompile(`portico\.toml:9: routes\[0\]\.pool: no pool named "nope"`)},
		{"port taken", simpleDoc(taken.Addr().String(), "", be, other),
			regexp.MustCompile(`portico\.toml:2: server\.http_addr: cannot listen on ` + regexp.QuoteMeta(taken.Addr().String()) + `: bind: address already in use`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.write(tc.doc)
			res := r.in.reload("test")
			if res.OK || len(res.Errors) != 1 || !tc.problem.MatchString(res.Errors[0]) {
				t.Errorf("reload: ok %v, errors %q; want refused with %v", res.OK, res.Errors, tc.problem)
			}
			waitUntil(t, "the problem logged", func() bool {
				for line := range strings.SplitSeq(r.logs.String(), "\n") {
					if strings.Contains(line, `msg="reload refused" trigger=test problem=`) && tc.problem.MatchString(strings.ReplaceAll(line, `\"`, `"`)) {
						return true
					}
				}
				return false
			})
			if res, body := getStatus(t, "http://"+addr+"/"); res.StatusCode != http.StatusOK || body != "ok" {
				t.Errorf("after the refused reload: %d %q", res.StatusCode, body)
			}
			if got := r.in.addrs().http; got != addr {
				t.Errorf("listener moved to %s", got)
			}
			if r.in.running.Load() != before {
				t.Error("the running configuration was replaced")
			}
		})
	}
	// Nor did the refused configurations leave metric series behind for
	// what they would have added.
	if n := sample(scrape(t, r.in.addrs().admin), "portico_backend_requests_total", "backend", other.addr); n != -1 {
		t.Errorf("a backend only a refused reload named has portico_backend_requests_total series (sum %v)", n)
	}
	// The bind that failed left nothing bound on the way: the good file
	// reloads, and the taken port was never bound by Portico.
	r.reload(simpleDoc(addr, "", be))
	mfs := scrape(t, r.in.addrs().admin)
	if f, ok := sample(mfs, "portico_config_reloads_total", "result", "failure"), sample(mfs, "portico_config_reloads_total", "result", "success"); f != 3 || ok != 1 {
		t.Errorf("portico_config_reloads_total: %v failed, %v succeeded; want 3 and 1", f, ok)
	}
	if v := sample(mfs, "portico_config_last_reload_successful"); v != 1 {
		t.Errorf("portico_config_last_reload_successful = %v after the good reload", v)
	}
}

// A hundred reloads, each rebuilding pools, health checks and the plain
// listener's server, with traffic in between, leave no goroutine, backend
// connection, file descriptor or metric series behind.
func TestHundredReloadsLeakNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("100 reloads")
	}
	a := startUpstream(t, "a", answer(0))
	b := startUpstream(t, "b", answer(0))
	cc := &b.conns
	doc := func(i int) string {
		us := []*upstream{a}
		if i%2 == 1 {
			us = append(us, b)
		}
		return strings.Replace(simpleDoc("127.0.0.1:0", fmt.Sprintf("drain_timeout = \"20ms\"\nidle_timeout = \"%ds\"", 60+i%2), us...),
			"[[routes]]", "health = { interval = \"50ms\", timeout = \"50ms\" }\n[[routes]]", 1)
	}
	r := startRig(t, doc(0))
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	get := func() {
		t.Helper()
		res, err := client.Get("http://" + r.in.addrs().http + "/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	get()
	r.reload(doc(1))
	get()
	r.reload(doc(0))
	client.CloseIdleConnections()
	time.Sleep(100 * time.Millisecond)
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)

	for i := 1; i <= 100; i++ {
		r.reload(doc(i))
		get()
		get() // round robin: b's turn, when it is in the pool
	}
	r.reload(doc(0)) // b removed: its connections close
	client.CloseIdleConnections()
	leakcheck.Settle(t, goroutines, "100 reloads")
	if cc.Opened.Load() == 0 {
		t.Error("backend b got no connection: the test checks nothing about them")
	}
	waitUntil(t, "b's connections closed", func() bool { return cc.Open() == 0 })
	waitUntil(t, "file descriptors back", func() bool { return openFDs(t) <= fds })
	t.Logf("after 100 reloads: %d goroutines (%d before), %d file descriptors (%d before); backend b saw %d connections, all closed",
		runtime.NumGoroutine(), goroutines, openFDs(t), fds, cc.Opened.Load())
	if n := sample(scrape(t, r.in.addrs().admin), "portico_backend_requests_total", "backend", b.addr); n != -1 {
		t.Errorf("removed backend b still has portico_backend_requests_total series (sum %v)", n)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(entries)
}

// The configuration file is watched when watch_config says so: replacing
// it by rename reloads it once, however many writes the editor makes.
func TestWatchConfigReloadsOnRename(t *testing.T) {
	be := startUpstream(t, "b", answer(0))
	r := startRig(t, simpleDoc("127.0.0.1:0", "watch_config = true", be))
	r.waitLog(`msg="watching the configuration for changes"`)
	for i := range 5 { // an editor saving in steps
		r.write(simpleDoc("127.0.0.1:0", fmt.Sprintf("watch_config = true\nidle_timeout = \"%ds\"", 30+i), be))
	}
	r.waitLog(`msg="configuration reloaded"`, `trigger="file change"`, "changes=1")
	time.Sleep(3 * watchDebounce)
	if n := strings.Count(r.logs.String(), `msg="configuration reloaded"`); n != 1 {
		t.Errorf("%d reloads for one save, want 1", n)
	}
	r.in.mu.Lock()
	if cfg := r.in.running.Load(); cfg.Server.IdleTimeout.Duration != 34*time.Second {
		t.Errorf("idle_timeout %v after the save, want the last write's 34s", cfg.Server.IdleTimeout.Duration)
	}
	r.in.mu.Unlock()
	// Touching the file without changing it reloads nothing.
	now := time.Now()
	_ = os.Chtimes(r.path, now, now)
	time.Sleep(3 * watchDebounce)
	if n := strings.Count(r.logs.String(), `msg="configuration reloaded"`); n != 1 {
		t.Errorf("%d reloads after a touch, want still 1", n)
	}
	// Turning watch_config off stops watching.
	r.write(simpleDoc("127.0.0.1:0", "", be))
	waitUntil(t, "second reload", func() bool { return strings.Count(r.logs.String(), `msg="configuration reloaded"`) == 2 })
	r.in.mu.Lock()
	watching := r.in.watch != nil
	r.in.mu.Unlock()
	if watching {
		t.Error("still watching with watch_config off")
	}
}

// portico reload asks the running instance to reload and prints what
// changed or why nothing did; validate -diff compares a file with it.
func TestReloadAndDiffCommands(t *testing.T) {
	a, b := startUpstream(t, "a", answer(0)), startUpstream(t, "b", answer(0))
	r := startRig(t, simpleDoc("127.0.0.1:0", "", a))
	adminURL := "http://" + r.in.addrs().admin

	code, stdout, stderr := runCLI(t, "validate", "-config", r.path, "-diff", "-admin", adminURL)
	if code != 0 || !strings.Contains(stdout, "no changes: a reload would change nothing") {
		t.Errorf("diff of the running file: exit %d\n%s%s", code, stdout, stderr)
	}

	next := strings.Replace(simpleDoc("127.0.0.1:0", `idle_timeout = "30s"`, a, b), "[[routes]]", "[[routes]]\nname = \"main\"", 1)
	r.write(next)
	code, stdout, stderr = runCLI(t, "validate", "-config", r.path, "-diff", "-admin", adminURL)
	for _, want := range []string{
		"server:\n  ~ server\n      http2.idle_timeout: \"2m0s\" -> \"30s\"\n      idle_timeout: \"2m0s\" -> \"30s\"\n",
		"routes:\n  - /\n  + main\n      host = \"\"\n",
		"backends:\n  + app http://" + b.addr + "\n      weight = 1\n",
		"4 changes: a reload would apply them\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("validate -diff lacks %q:\n%s", want, stdout)
		}
	}
	if code != 2 {
		t.Errorf("validate -diff with changes: exit %d, want 2\n%s", code, stderr)
	}

	code, stdout, stderr = runCLI(t, "reload", "-admin", strings.TrimPrefix(adminURL, "http://"))
	if code != 0 || !strings.HasPrefix(stdout, "reloaded "+r.path+": 4 changes\n") || !strings.Contains(stdout, "+ app http://"+b.addr) {
		t.Errorf("portico reload: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, _ := runCLI(t, "validate", "-config", r.path, "-diff", "-admin", adminURL); code != 0 {
		t.Errorf("diff after the reload: exit %d\n%s", code, stdout)
	}

	r.write(strings.Replace(next, `pool = "app"`, `pool = "nope"`, 1))
	code, stdout, stderr = runCLI(t, "reload", "-admin", adminURL)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "not reloaded; the running configuration stays in force:\n"+r.path+":10: routes[0].pool: no pool named \"nope\"\n") {
		t.Errorf("portico reload of an invalid file: exit %d\nstdout %q\nstderr %q", code, stdout, stderr)
	}
	if code, _, stderr := runCLI(t, "validate", "-config", r.path, "-diff", "-admin", adminURL); code != 1 || !strings.Contains(stderr, `no pool named "nope"`) {
		t.Errorf("validate -diff of an invalid file: exit %d, %q", code, stderr)
	}
	if code, _, stderr := runCLI(t, "reload", "-admin", "127.0.0.1:1"); code != 1 || !strings.Contains(stderr, "cannot reach the admin API at http://127.0.0.1:1") {
		t.Errorf("portico reload without Portico: exit %d, %q", code, stderr)
	}
}

// Shutdown turns readiness off first, closes idle keep-alive connections
// at once, sends HTTP/2 clients GOAWAY, and lets the requests in flight
// finish.
func TestShutdownDrainsGracefully(t *testing.T) {
	release := make(chan struct{})
	be := startUpstream(t, "b", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	})
	ca := testcert.NewCA(t)
	certFile, keyFile := ca.Valid(t, "front.test").WriteFiles(t, t.TempDir(), "front")
	r := startRig(t, simpleDoc("127.0.0.1:0", `https_addr = "127.0.0.1:0"
redirect_http = false
[[tls.certificates]]
cert_file = "`+certFile+`"
key_file = "`+keyFile+`"`, be))
	addrs := r.in.addrs()
	if !r.in.ready.Ready() {
		t.Fatal("not ready after start")
	}

	idle, err := net.Dial("tcp", addrs.http)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	_, _ = io.WriteString(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if res, err := http.ReadResponse(bufio.NewReader(idle), nil); err != nil || res.StatusCode != 200 {
		t.Fatalf("keep-alive request: %v %v", res, err)
	}

	tc, err := tls.Dial("tcp", addrs.https, &tls.Config{RootCAs: ca.Pool(), ServerName: "front.test", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	cc, err := (&http2.Transport{}).NewClientConn(tc)
	if err != nil {
		t.Fatal(err)
	}
	slow := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "https://front.test/slow", nil)
		res, err := cc.RoundTrip(req)
		if err != nil {
			slow <- err.Error()
			return
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		slow <- res.Proto + " " + string(body)
	}()
	waitUntil(t, "slow request at the backend", func() bool { return be.hits.Load() == 2 })

	done := make(chan error, 1)
	go func() { done <- r.stop() }()
	start := time.Now()
	waitUntil(t, "readiness off", func() bool { return !r.in.ready.Ready() })
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); err == nil || n != 0 {
		t.Errorf("idle keep-alive connection: read %d, %v; want it closed", n, err)
	} else if took := time.Since(start); took > time.Second {
		t.Errorf("idle keep-alive connection closed after %v, want at once", took)
	}
	waitUntil(t, "GOAWAY on the HTTP/2 connection", func() bool { return !cc.CanTakeNewRequest() })
	select {
	case err := <-done:
		t.Fatalf("shutdown returned (%v) with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if got := <-slow; got != "HTTP/2.0 ok" {
		t.Errorf("request in flight at shutdown: %q, want it answered", got)
	}
	if err := <-done; err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// New server limits apply to new connections; a keep-alive connection
// finishes its next request under the old ones and is then closed, so its
// client moves over.
func TestServerSettingsApplyToNewConnections(t *testing.T) {
	be := startUpstream(t, "b", answer(0))
	r := startRig(t, simpleDoc("127.0.0.1:0", "", be))
	addr := r.in.addrs().http
	big := "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 8000) + "\r\n\r\n"

	old, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	_ = old.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(old)
	_, _ = io.WriteString(old, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != 200 || res.Close {
		t.Fatalf("before the reload: %v %v", res, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(br, 2))

	r.reload(simpleDoc(addr, "max_header_bytes = 1024", be))
	if res, _ := rawRequest(t, addr, big); res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("new connection with an 8 KB header after max_header_bytes = 1024: %d, want 431", res.StatusCode)
	}
	_, _ = io.WriteString(old, big)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 200 || !res.Close {
		t.Fatalf("old keep-alive connection: %v %v; want served under the old limits, then closed", res, err)
	}
}

// rawRequest sends request on a new connection and reads the response.
func rawRequest(t *testing.T, addr, request string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, request)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

// A reload that changes admin_token or turns admin_pprof off holds at
// once, on admin connections opened before it too: a keep-alive client
// holding the old token (the one being rotated out because it leaked) gets
// nothing more, not even one request. (A retired admin server used to
// answer the next request on each idle connection with its old settings,
// and with no idle timeout such a connection never ended.)
func TestAdminTokenChangeHoldsOnOpenConnections(t *testing.T) {
	const oldToken, newToken = "old-token-0123456789", "new-token-0123456789"
	be := startUpstream(t, "b", answer(0))
	doc := func(server string) string { return simpleDoc("127.0.0.1:0", server, be) }
	r := startRig(t, doc(`admin_token = "`+oldToken+`"`+"\nadmin_pprof = true"))
	addr := r.in.addrs().admin
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	ask := func(path, token string) (int, error) {
		if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer "+token+"\r\n\r\n"); err != nil {
			return 0, err
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode, err
	}
	for _, path := range []string{"/api/status", "/debug/pprof/"} {
		if code, err := ask(path, oldToken); code != http.StatusOK {
			t.Fatalf("GET %s with the token before the reload: %d, %v", path, code, err)
		}
	}

	r.reload(doc(`admin_token = "` + newToken + `"`))
	if code, err := ask("/api/status", oldToken); code == http.StatusOK {
		t.Errorf("GET /api/status with the old token on a connection opened before the reload: %d, %v; want refused", code, err)
	}
	if res, _ := rawRequest(t, addr, "GET /api/status HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer "+oldToken+"\r\n\r\n"); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /api/status with the old token on a new connection: %d, want 401", res.StatusCode)
	}
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, br = c2, bufio.NewReader(c2)
	defer c2.Close()
	_ = c2.SetDeadline(time.Now().Add(5 * time.Second))
	if code, err := ask("/api/status", newToken); code != http.StatusOK {
		t.Errorf("GET /api/status with the new token: %d, %v", code, err)
	}
	if code, err := ask("/debug/pprof/", newToken); code != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ after admin_pprof was turned off: %d, %v; want 404", code, err)
	}
}

// The admin listener starts serving as the last listener is set up, a
// moment before the listeners are recorded: /api/status asked then lists
// none instead of failing on the missing record.
func TestAdminStatusBeforeListenersRecorded(t *testing.T) {
	var in instance
	if got := in.adminOptions().Listeners(); len(got) != 0 {
		t.Errorf("listeners %v before any was recorded, want none", got)
	}
}

// With admin_token set, portico reload and validate -diff send it as
// -token or $PORTICO_ADMIN_TOKEN, and say so when it is missing.
func TestReloadCommandSendsTheToken(t *testing.T) {
	const token = "0123456789abcdef0123"
	be := startUpstream(t, "b", answer(0))
	r := startRig(t, simpleDoc("127.0.0.1:0", `admin_token = "`+token+`"`, be))
	admin := r.in.addrs().admin
	if code, _, stderr := runCLI(t, "reload", "-admin", admin); code != 1 || !strings.Contains(stderr, "pass -token or set PORTICO_ADMIN_TOKEN") {
		t.Errorf("without the token: exit %d, %q", code, stderr)
	}
	if code, stdout, stderr := runCLI(t, "reload", "-admin", admin, "-token", token); code != 0 || !strings.Contains(stdout, "no changes") {
		t.Errorf("with -token: exit %d, %q %q", code, stdout, stderr)
	}
	t.Setenv("PORTICO_ADMIN_TOKEN", token)
	if code, stdout, stderr := runCLI(t, "validate", "-config", r.path, "-diff", "-admin", admin); code != 0 {
		t.Errorf("validate -diff with $PORTICO_ADMIN_TOKEN: exit %d, %q %q", code, stdout, stderr)
	}
}

func TestAdminURLOfAConfiguration(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:9090": "http://127.0.0.1:9090",
		":9090":          "http://127.0.0.1:9090",
		"0.0.0.0:9091":   "http://127.0.0.1:9091",
		"[::]:9092":      "http://[::1]:9092",
		"10.0.0.5:9090":  "http://10.0.0.5:9090",
		"off":            "",
	} {
		cfg := &config.Config{Server: config.Server{AdminAddr: addr}}
		if got := adminURLOf(cfg); got != want {
			t.Errorf("admin_addr %q: %q, want %q", addr, got, want)
		}
	}
}

// Two listeners can swap addresses in one reload: each takes over the
// other's socket, where binding anew would find the address in use.
func TestListenersSwapAddresses(t *testing.T) {
	be := startUpstream(t, "b", answer(0))
	ports := loopbackPorts(t, 2)
	a, b := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	doc := func(http, admin string) string {
		return strings.Replace(simpleDoc(http, "", be), `admin_addr = "127.0.0.1:0"`, `admin_addr = "`+admin+`"`, 1)
	}
	r := startRig(t, doc(a, b))
	r.reload(doc(b, a))
	if got := r.in.addrs(); got.http != b || got.admin != a {
		t.Fatalf("after the swap: http %s, admin %s; want %s and %s", got.http, got.admin, b, a)
	}
	if res, body := getStatus(t, "http://"+b+"/"); res.StatusCode != 200 || body != "ok" {
		t.Errorf("proxy on the admin's old address: %d %q", res.StatusCode, body)
	}
	if res, body := getStatus(t, "http://"+a+"/healthz"); res.StatusCode != 200 || body != "ok\n" {
		t.Errorf("admin on the proxy's old address: %d %q", res.StatusCode, body)
	}
}

// A rate limit whose options a reload leaves alone keeps its buckets, so a
// reload hands no client a fresh burst; new options start afresh.
func TestReloadKeepsRateLimitBuckets(t *testing.T) {
	a, b := startUpstream(t, "a", answer(0)), startUpstream(t, "b", answer(0))
	doc := func(rate string, us ...*upstream) string {
		return strings.Replace(simpleDoc("127.0.0.1:0", "", us...), "[[routes]]\npool = \"app\"\n",
			"[[routes]]\npool = \"app\"\nmiddlewares = [\"limit\"]\n[middlewares.limit]\ntype = \"rate_limit\"\nrate = \""+rate+"\"\nburst = 1\n", 1)
	}
	r := startRig(t, doc("1/h", a))
	url := "http://" + r.in.addrs().http + "/"
	status := func() int { res, _ := getStatus(t, url); return res.StatusCode }
	if s1, s2 := status(), status(); s1 != 200 || s2 != http.StatusTooManyRequests {
		t.Fatalf("before the reload: %d then %d, want 200 then 429", s1, s2)
	}
	r.reload(doc("1/h", a, b))
	if s := status(); s != http.StatusTooManyRequests {
		t.Errorf("after a reload that left the limit alone: %d, want 429 (bucket kept)", s)
	}
	r.reload(doc("2/h", a, b))
	if s := status(); s != 200 {
		t.Errorf("after a reload that changed the rate: %d, want 200 (new buckets)", s)
	}
}
