package main

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico/portico/admin"
	"github.com/portico/portico/config"
	"github.com/portico/portico/internal/testlog"
	"github.com/portico/portico/internal/testserve"
)

// rig is Portico running in this process from a configuration file that a
// test rewrites and reloads.
type rig struct {
	t    *testing.T
	path string
	in   *instance
	logs *testlog.Buffer
	once sync.Once
}

func startRig(t *testing.T, doc string) *rig {
	t.Helper()
	r := &rig{t: t, path: filepath.Join(t.TempDir(), "portico.toml"), logs: &testlog.Buffer{}}
	r.write(doc)
	cfg, err := config.Load(r.path)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, doc)
	}
	r.in, err = start(cfg, r.path, slog.New(slog.NewTextHandler(r.logs, nil)), nil)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return r
}

// stop shuts the instance down, once.
func (r *rig) stop() (err error) {
	r.once.Do(func() { err = r.in.shutdown(nil) })
	return err
}

// write replaces the configuration file the way editors do: a new file
// renamed over the old one.
func (r *rig) write(doc string) {
	r.t.Helper()
	tmp := r.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o600); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Rename(tmp, r.path); err != nil {
		r.t.Fatal(err)
	}
}

// reload writes doc and reloads it, failing the test if it is refused.
func (r *rig) reload(doc string) admin.ReloadResult {
	r.t.Helper()
	r.write(doc)
	res := r.in.reload("test")
	if !res.OK {
		r.t.Fatalf("reload refused: %v\n%s", res.Errors, doc)
	}
	return res
}

// waitLog waits until the log has a line containing every part.
func (r *rig) waitLog(parts ...string) {
	r.t.Helper()
	waitUntil(r.t, "log line with "+strings.Join(parts, ", "), func() bool {
		for line := range strings.SplitSeq(r.logs.String(), "\n") {
			found := true
			for _, p := range parts {
				found = found && strings.Contains(line, p)
			}
			if found {
				return true
			}
		}
		return false
	})
}

// traced is a backend that records when requests (not probes) arrive and
// answers "NAME METHOD BODY-LENGTH". Under /ws it upgrades and echoes; under
// /ws/events it streams a server-sent event every 20 ms.
type traced struct {
	*upstream
	first, last atomic.Int64 // unix ns of the first and last request
}

func startTraced(t *testing.T, name string) *traced {
	tr := &traced{}
	tr.upstream = startUpstream(t, name, func(w http.ResponseWriter, r *http.Request) {
		now := time.Now().UnixNano()
		tr.first.CompareAndSwap(0, now)
		tr.last.Store(now)
		switch {
		case r.URL.Path == "/ws/events":
			testserve.Events(w, r)
		case strings.HasPrefix(r.URL.Path, "/ws"):
			echoUpgrade(w, r)
		default:
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%s %s %d", name, r.Method, n)
		}
	})
	return tr
}

func echoUpgrade(w http.ResponseWriter, _ *http.Request) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if brw.Flush() == nil {
		_, _ = io.Copy(conn, brw.Reader)
	}
}

// openUpgrade opens an upgraded (WebSocket-like) connection through addr.
func openUpgrade(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_, _ = io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", res, err)
	}
	return conn, br
}

func echoes(conn net.Conn, br *bufio.Reader, msg string) error {
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(br, got); err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// traffic is steady load on the plain listener, which may move: each
// request goes to the address in force when it is sent. Half the workers
// keep connections alive, half open one per request; GETs and POSTs
// alternate, on two routes.
type traffic struct {
	target     atomic.Pointer[string]
	ok, failed atomic.Int64
	mu         sync.Mutex
	failures   []string
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startTraffic(t *testing.T, addr string, workers int) *traffic {
	tr := &traffic{stop: make(chan struct{})}
	tr.target.Store(&addr)
	for i := range workers {
		tr.wg.Go(func() { tr.worker(i) })
	}
	t.Cleanup(tr.halt)
	return tr
}

func (tr *traffic) halt() {
	select {
	case <-tr.stop:
	default:
		close(tr.stop)
	}
	tr.wg.Wait()
}

func (tr *traffic) fail(msg string) {
	tr.failed.Add(1)
	tr.mu.Lock()
	if len(tr.failures) < 10 {
		tr.failures = append(tr.failures, msg)
	}
	tr.mu.Unlock()
}

func (tr *traffic) worker(i int) {
	transport := &http.Transport{Proxy: nil, DisableKeepAlives: i%2 == 1, MaxIdleConnsPerHost: 1}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	for n := 0; ; n++ {
		select {
		case <-tr.stop:
			return
		case <-time.After(4 * time.Millisecond):
		}
		path := [...]string{"/", "/alt/x"}[n%2]
		method := [...]string{http.MethodGet, http.MethodPost}[n/2%2]
		body := strings.Repeat("p", n%100)
		for {
			addr := *tr.target.Load()
			req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
			if method == http.MethodGet {
				req.Body, req.ContentLength = nil, 0
			}
			res, err := client.Do(req)
			if err != nil {
				tr.fail(fmt.Sprintf("%s %s: %v", method, path, err))
				break
			}
			got, err := io.ReadAll(res.Body)
			res.Body.Close()
			want := fmt.Sprintf(" %s %d", method, len(body))
			if method == http.MethodGet {
				want = " GET 0"
			}
			if err != nil || res.StatusCode != http.StatusOK || !strings.HasSuffix(string(got), want) {
				tr.fail(fmt.Sprintf("%s %s: %d %q %v", method, path, res.StatusCode, got, err))
				break
			}
			tr.ok.Add(1)
			break
		}
	}
}

// reloadDoc is the configuration of the reload-under-load test.
func reloadDoc(port int, extra *traced, altPool string, strip bool, base []*traced, alt, ws *traced) string {
	app := []*upstream{base[0].upstream, base[1].upstream}
	if extra != nil {
		app = append(app, extra.upstream)
	}
	return fmt.Sprintf(`[server]
http_addr = "127.0.0.1:%d"
admin_addr = "off"
drain_timeout = "1s"
shutdown_timeout = "5s"
[pools.app]
backends = %s
health = { interval = "100ms", timeout = "100ms" }
[pools.alt]
backends = %s
[pools.ws]
backends = %s
[[routes]]
pool = "app"
[[routes]]
path_prefix = "/alt"
strip_prefix = %v
pool = %q
[[routes]]
path_prefix = "/ws"
pool = "ws"
[log]
access_log = "off"
`, port, backendList(app...), backendList(alt.upstream), backendList(ws.upstream), strip, altPool)
}

// Twenty reloads under steady load, adding and removing backends, changing
// a route and moving the plain listener to another port and back, fail no
// request; a new backend gets traffic within 2 s and a removed one none
// after 2 s; a WebSocket and an event stream opened before keep going.
func TestReloadsUnderLoadFailNoRequest(t *testing.T) {
	ports := loopbackPorts(t, 2)
	base := []*traced{startTraced(t, "b0"), startTraced(t, "b1")}
	alt, ws := startTraced(t, "alt"), startTraced(t, "ws")
	extras := map[int]*traced{}
	for i := 1; i <= 20; i += 2 {
		extras[i] = startTraced(t, fmt.Sprintf("x%d", i))
	}
	r := startRig(t, reloadDoc(ports[0], nil, "alt", false, base, alt, ws))
	addr := r.in.addrs().http

	conn, br := openUpgrade(t, addr)
	events, err := http.Get("http://" + addr + "/ws/events")
	if err != nil {
		t.Fatal(err)
	}
	defer events.Body.Close()
	var ticks atomic.Int64
	var maxGap atomic.Int64
	streamErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(events.Body)
		last := time.Now()
		for sc.Scan() {
			if sc.Text() == "data: tick" {
				ticks.Add(1)
				if gap := time.Since(last); int64(gap) > maxGap.Load() {
					maxGap.Store(int64(gap))
				}
				last = time.Now()
			}
		}
		streamErr <- fmt.Errorf("event stream ended: %v", sc.Err())
	}()

	load := startTraffic(t, addr, 6)
	removedAt := map[*traced]time.Time{}
	var slowestNew time.Duration
	port := ports[0]
	start := time.Now()
	for i := 1; i <= 20; i++ {
		time.Sleep(100 * time.Millisecond)
		var extra *traced
		if i%2 == 1 {
			extra = extras[i]
		}
		switch {
		case i%4 == 3:
			port = ports[1]
		case i%4 == 1 && i > 1:
			port = ports[0]
		}
		altPool, strip := "alt", false
		if i%2 == 0 {
			altPool, strip = "app", true
		}
		res := r.reload(reloadDoc(port, extra, altPool, strip, base, alt, ws))
		reloadedAt := time.Now()
		a := r.in.addrs().http
		load.target.Store(&a)
		if extra != nil {
			took := waitFor(t, fmt.Sprintf("reload %d: traffic to the new backend", i), func() bool { return extra.first.Load() != 0 })
			slowestNew = max(slowestNew, took)
			if took > 2*time.Second {
				t.Errorf("reload %d: the new backend got its first request after %v, want within 2 s", i, took)
			}
		} else {
			removedAt[extras[i-1]] = reloadedAt
		}
		if len(res.Changes) == 0 {
			t.Errorf("reload %d reported no changes", i)
		}
	}
	reloading := time.Since(start)
	// Two more seconds, in which removed backends must get nothing.
	time.Sleep(2100 * time.Millisecond)
	load.halt()

	if err := echoes(conn, br, "still there"); err != nil {
		t.Errorf("WebSocket opened before the reloads: %v", err)
	}
	select {
	case err := <-streamErr:
		t.Errorf("event stream cut: %v", err)
	default:
	}
	var latest time.Duration
	for x, at := range removedAt {
		if lag := time.Duration(x.last.Load() - at.UnixNano()); lag > latest {
			latest = lag
		}
	}
	total := load.ok.Load() + load.failed.Load()
	t.Logf("20 reloads in %v under load: %d requests (%.0f/s), %d failed; new backends' first request within %v; latest request to a removed backend %v after its removal; event stream: %d events, longest gap %v",
		reloading.Round(time.Millisecond), total, float64(total)/time.Since(start).Seconds(), load.failed.Load(),
		slowestNew.Round(time.Millisecond), latest.Round(time.Millisecond), ticks.Load(), time.Duration(maxGap.Load()).Round(time.Millisecond))
	if load.failed.Load() != 0 {
		t.Errorf("%d of %d requests failed; first: %v", load.failed.Load(), total, load.failures)
	}
	if load.ok.Load() < 1000 {
		t.Errorf("only %d requests succeeded", load.ok.Load())
	}
	if latest > 2*time.Second {
		t.Errorf("a removed backend got a request %v after its removal, want none after 2 s", latest)
	}
	if d := time.Duration(maxGap.Load()); d > time.Second {
		t.Errorf("the event stream stalled for %v", d)
	}
	for _, b := range base {
		if b.hits.Load() == 0 {
			t.Errorf("%s got no traffic", b.name)
		}
	}
}

// waitFor polls cond and returns how long it took to hold.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	waitUntil(t, what, cond)
	return time.Since(start)
}
