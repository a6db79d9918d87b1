package health

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico/portico/balancer"
	"github.com/portico/portico/config"
	"github.com/portico/portico/internal/leakcheck"
)

// How a test backend answers.
const (
	answerOK     = iota // 200 "ready"
	answer500           // 500
	answerHang          // never answers
	answerSlow          // answers 200, after three probe timeouts
	answerClose         // accepts and closes the connection
	answerRefuse        // not listening: connection refused
)

// backend is a real loopback HTTP server whose behaviour a test switches.
type backend struct {
	t      *testing.T
	addr   string
	answer atomic.Int32
	slow   time.Duration

	active, maxActive atomic.Int32 // requests being answered now, and the most at once
	probes            atomic.Int64 // requests answered

	mu   sync.Mutex
	srv  *http.Server
	last *http.Request // the last probe's request, for its method, path and Host
}

func newBackend(t *testing.T, slow time.Duration) *backend {
	t.Helper()
	b := &backend{t: t, slow: slow}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	b.serve(ln)
	t.Cleanup(func() { b.set(answerRefuse) })
	return b
}

func (b *backend) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(b.handle), ReadHeaderTimeout: 5 * time.Second}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

func (b *backend) handle(w http.ResponseWriter, r *http.Request) {
	b.probes.Add(1)
	n := b.active.Add(1)
	defer b.active.Add(-1)
	for m := b.maxActive.Load(); n > m && !b.maxActive.CompareAndSwap(m, n); m = b.maxActive.Load() {
	}
	b.mu.Lock()
	b.last = r
	b.mu.Unlock()
	switch b.answer.Load() {
	case answer500:
		w.WriteHeader(http.StatusInternalServerError)
	case answerHang:
		<-r.Context().Done()
	case answerSlow:
		select {
		case <-time.After(b.slow):
			_, _ = io.WriteString(w, "ready")
		case <-r.Context().Done():
		}
	case answerClose:
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = c.Close()
		}
	default:
		_, _ = io.WriteString(w, "ready")
	}
}

// set switches the answer; answerRefuse closes the listener and every
// connection, and leaving it listens again on the same address.
func (b *backend) set(answer int32) {
	old := b.answer.Swap(answer)
	switch {
	case answer == answerRefuse && old != answerRefuse:
		b.mu.Lock()
		_ = b.srv.Close()
		b.mu.Unlock()
	case old == answerRefuse && answer != answerRefuse:
		ln, err := net.Listen("tcp", b.addr)
		if err != nil {
			b.t.Fatalf("listen again on %s: %v", b.addr, err)
		}
		b.serve(ln)
	}
}

func (b *backend) lastRequest() *http.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

// logBuffer collects log output from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// waitFor waits for a line containing want: the state changes just before
// its log line is written.
func (l *logBuffer) waitFor(t *testing.T, want string) {
	t.Helper()
	for deadline := time.Now().Add(time.Second); !strings.Contains(l.String(), want); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("log lacks %s\nlog:\n%s", want, l.String())
			return
		}
	}
}

// checked builds a pool over the given backends with cfg's checks running.
func checked(t *testing.T, cfg string, opts balancer.Options, addrs ...string) (*balancer.Pool, *logBuffer) {
	t.Helper()
	c, err := config.Parse([]byte(fmt.Sprintf(`
[pools.p]
backends = [{ url = "http://%s" }]
health = { %s }
[[routes]]
pool = "p"
`, addrs[0], cfg)), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	var bs []*balancer.Backend
	for _, a := range addrs {
		b, err := balancer.NewBackend(&url.URL{Scheme: "http", Host: a}, 1)
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	logs := &logBuffer{}
	opts.Log = slog.New(slog.NewTextHandler(logs, nil))
	pool, err := balancer.NewPool("p", bs, opts)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := startChecker(pool, c.Pools["p"].Health, opts.Log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ch.Stop)
	return pool, logs
}

// waitFor polls cond every millisecond and returns how long it took to hold.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not after %v", what, limit)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

const (
	interval = 100 * time.Millisecond
	timeout  = 50 * time.Millisecond
	rise     = 2
	fall     = 3
	// slack covers polling and scheduling on a loaded test machine; the
	// bounds themselves are the issue's, not padded.
	slack = 40 * time.Millisecond
)

var probeCfg = fmt.Sprintf(`interval = "%s", timeout = "%s", rise = %d, fall = %d, expect_body = "ready"`, interval, timeout, rise, fall)

func TestBrokenBackendGoesDownWithinFallAndBackWithinRise(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer int32
		reason string
	}{
		{"answers 500", answer500, "status 500, want 200-399"},
		{"hangs", answerHang, "timeout after 50ms"},
		{"answers slowly", answerSlow, "timeout after 50ms"},
		{"closes connections", answerClose, "connection closed"},
		{"stops listening", answerRefuse, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			be := newBackend(t, 3*timeout)
			pool, logs := checked(t, probeCfg, balancer.Options{}, be.addr)
			b := pool.Backends()[0]
			waitFor(t, "first probe", 2*interval, func() bool { c := b.State().LastCheck; return c != nil && c.OK })

			be.set(tc.answer)
			down := waitFor(t, "marked down", 5*time.Second, func() bool { return !b.Usable() })
			be.set(answerOK)
			up := waitFor(t, "marked up", 5*time.Second, b.Usable)
			t.Logf("down after %v (bound fall×interval+timeout = %v), up after %v (bound rise×interval = %v)",
				down.Round(time.Millisecond), fall*interval+timeout, up.Round(time.Millisecond), rise*interval)
			if down > fall*interval+timeout+slack {
				t.Errorf("marked down after %v, want within fall×interval+timeout = %v", down, fall*interval+timeout)
			}
			if up > rise*interval+slack {
				t.Errorf("marked up after %v, want within rise×interval = %v", up, rise*interval)
			}
			for _, want := range []string{
				`msg="backend down" pool=p backend=` + be.addr + ` old=up new=down reason="` + tc.reason + `"`,
				`msg="backend up" pool=p backend=` + be.addr + ` old=down new=up reason="status 200"`,
			} {
				logs.waitFor(t, want)
			}
			if n := be.maxActive.Load(); n > 1 {
				t.Errorf("%d probes were answered at once, want one at a time", n)
			}
		})
	}
}

// A backend is usable until its first probe says otherwise, and that first
// failing probe takes it out at once, without waiting for fall.
func TestFirstProbeDecides(t *testing.T) {
	be := newBackend(t, 0)
	be.set(answer500)
	pool, _ := checked(t, probeCfg, balancer.Options{}, be.addr)
	b := pool.Backends()[0]
	if !b.Usable() {
		t.Fatal("backend unusable before any probe, want usable")
	}
	took := waitFor(t, "marked down", 5*time.Second, func() bool { return !b.Usable() })
	if took > interval+slack {
		t.Errorf("marked down after %v, want after the first probe (within interval %v)", took, interval)
	}
	if c := b.State().LastCheck; c == nil || c.OK || c.Fails != 1 || c.Detail != "status 500, want 200-399" {
		t.Errorf("last check %+v, want one failure with status 500", c)
	}
}

func TestProbeSendsMethodPathAndHostAndChecksBody(t *testing.T) {
	for _, tc := range []struct {
		name, cfg string
		method    string
		path      string
		host      string
		healthy   bool
	}{
		{"defaults", `interval = "50ms"`, "GET", "/healthz", "", true},
		{"method path host", `interval = "50ms", method = "HEAD", path = "/up?deep=1", host = "app.internal"`, "HEAD", "/up?deep=1", "app.internal", true},
		{"body found", `interval = "50ms", expect_body = "read"`, "GET", "/healthz", "", true},
		{"body missing", `interval = "50ms", expect_body = "ok"`, "GET", "/healthz", "", false},
		{"status not expected", `interval = "50ms", expect_status = "204"`, "GET", "/healthz", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			be := newBackend(t, 0)
			pool, _ := checked(t, tc.cfg, balancer.Options{}, be.addr)
			b := pool.Backends()[0]
			waitFor(t, "first probe", time.Second, func() bool { return b.State().LastCheck != nil })
			if b.Usable() != tc.healthy {
				t.Errorf("usable = %v after %+v, want %v", b.Usable(), b.State().LastCheck, tc.healthy)
			}
			r := be.lastRequest()
			host := tc.host
			if host == "" {
				host = be.addr
			}
			if r.Method != tc.method || r.URL.RequestURI() != tc.path || r.Host != host || r.UserAgent() != "portico-health" {
				t.Errorf("probe was %s %s Host %s UA %q, want %s %s Host %s", r.Method, r.URL.RequestURI(), r.Host, r.UserAgent(), tc.method, tc.path, host)
			}
		})
	}
}

// Passes while a backend is ejected bring it back before fail_timeout.
func TestActiveChecksReadmitEjectedBackend(t *testing.T) {
	be := newBackend(t, 0)
	other := newBackend(t, 0)
	pool, logs := checked(t, probeCfg, balancer.Options{Passive: balancer.Passive{MaxFails: 1, FailTimeout: time.Hour, MaxEjectedPercent: 50}}, be.addr, other.addr)
	b := pool.Backends()[0]
	b.Report(balancer.Failure, time.Millisecond)
	if !b.Ejected() {
		t.Fatal("not ejected after a failure with max_fails 1")
	}
	took := waitFor(t, "readmitted", 5*time.Second, b.Usable)
	if took > rise*interval+slack {
		t.Errorf("readmitted after %v, want within rise×interval %v", took, rise*interval)
	}
	logs.waitFor(t, `msg="backend readmitted" pool=p backend=`+be.addr+` old=ejected new=usable reason="2 active checks passed"`)
}

func TestStartRejectsUnvalidatedSettings(t *testing.T) {
	b, _ := balancer.NewBackend(&url.URL{Scheme: "http", Host: "127.0.0.1:1"}, 1)
	pool, _ := balancer.NewPool("p", []*balancer.Backend{b}, balancer.Options{})
	ok := config.Health{Path: "/", Method: "GET", Rise: 1, Fall: 1, Statuses: []config.StatusRange{{Min: 200, Max: 299}}}
	ok.Interval.Duration, ok.Timeout.Duration = time.Second, time.Second
	for name, mutate := range map[string]func(h *config.Health){
		"zero interval":    func(h *config.Health) { h.Interval.Duration = 0 },
		"zero fall":        func(h *config.Health) { h.Fall = 0 },
		"no statuses":      func(h *config.Health) { h.Statuses = nil },
		"relative path":    func(h *config.Health) { h.Path = "x" },
		"negative timeout": func(h *config.Health) { h.Timeout.Duration = -1 },
	} {
		h := ok
		mutate(&h)
		if c, err := startChecker(pool, &h, slog.New(slog.DiscardHandler)); err == nil {
			c.Stop()
			t.Errorf("%s: Start succeeded, want an error", name)
		}
	}
	if _, err := startChecker(nil, &ok, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("Start without a pool succeeded")
	}
}

// Building and stopping checkers over and over, with probes in flight to a
// hanging backend, leaves no goroutine behind.
func TestNoGoroutineLeaks(t *testing.T) {
	hang, ok := newBackend(t, 0), newBackend(t, 0)
	hang.set(answerHang)
	// Let the test servers' own goroutines settle before counting.
	time.Sleep(10 * time.Millisecond)
	base := runtime.NumGoroutine()
	cfg := `interval = "20ms", timeout = "20ms"`
	for range 20 {
		c, err := config.Parse([]byte(fmt.Sprintf("[pools.p]\nbackends = [{ url = \"http://%s\" }, { url = \"http://%s\" }]\nhealth = { %s }\n[[routes]]\npool = \"p\"\n",
			hang.addr, ok.addr, cfg)), "t.toml")
		if err != nil {
			t.Fatal(err)
		}
		var bs []*balancer.Backend
		for _, bc := range c.Pools["p"].Backends {
			b, _ := balancer.NewBackend(bc.Parsed, bc.Weight)
			bs = append(bs, b)
		}
		pool, _ := balancer.NewPool("p", bs, balancer.Options{})
		g, err := StartAll([]*balancer.Pool{pool}, c.Pools, slog.New(slog.DiscardHandler))
		if err != nil || len(g.checkers) != 1 {
			t.Fatalf("StartAll: %v, %d checkers", err, len(g.checkers))
		}
		time.Sleep(30 * time.Millisecond)
		g.Stop()
	}
	// Server-side handlers of cancelled probes end as their connections close.
	leakcheck.Settle(t, base, "20 start/stop cycles")
}

// poolOf builds pool "p" over addrs, taking over the state of prev's
// backends of the same address, as a reload does.
func poolOf(t *testing.T, prev *balancer.Pool, addrs ...string) *balancer.Pool {
	t.Helper()
	old := map[string]*balancer.Backend{}
	if prev != nil {
		for _, b := range prev.Backends() {
			old[b.URL().Host] = b
		}
	}
	var bs []*balancer.Backend
	for _, a := range addrs {
		var b *balancer.Backend
		var err error
		if o, ok := old[a]; ok {
			b, err = o.Successor(1)
		} else {
			b, err = balancer.NewBackend(&url.URL{Scheme: "http", Host: a}, 1)
		}
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	var p *balancer.Pool
	var err error
	if prev != nil {
		p, err = prev.Next(bs, balancer.Options{})
	} else {
		p, err = balancer.NewPool("p", bs, balancer.Options{})
	}
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func healthConfig(t *testing.T, h string, addr string) map[string]*config.Pool {
	t.Helper()
	c, err := config.Parse([]byte(fmt.Sprintf("[pools.p]\nbackends = [{ url = \"http://%s\" }]\nhealth = { %s }\n[[routes]]\npool = \"p\"\n", addr, h)), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	return c.Pools
}

// A reload keeps probing the backends that stay without resetting their
// streaks, starts probing new ones and stops probing removed ones; new
// health settings start the pool's probes afresh.
func TestUpdateCarriesProbesAcrossReloads(t *testing.T) {
	stay, gone, added := newBackend(t, 0), newBackend(t, 0), newBackend(t, 0)
	cfg := healthConfig(t, `interval = "20ms", timeout = "20ms", rise = 1`, stay.addr)
	p1 := poolOf(t, nil, stay.addr, gone.addr)
	g, err := StartAll([]*balancer.Pool{p1}, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	passes := func(p *balancer.Pool, i int) int {
		if c := p.Backends()[i].State().LastCheck; c != nil {
			return c.Passes
		}
		return 0
	}
	waitFor(t, "three passes", 5*time.Second, func() bool { return passes(p1, 0) >= 3 })

	p2 := poolOf(t, p1, stay.addr, added.addr)
	if err := g.Update([]*balancer.Pool{p2}, cfg); err != nil {
		t.Fatal(err)
	}
	before := passes(p2, 0)
	goneProbes := gone.probes.Load()
	waitFor(t, "the new backend probed", 5*time.Second, func() bool { return p2.Backends()[1].State().LastCheck != nil })
	waitFor(t, "more passes", 5*time.Second, func() bool { return passes(p2, 0) >= before+3 })
	if n := gone.probes.Load() - goneProbes; n > 1 { // one may have been in flight
		t.Errorf("the removed backend got %d probes after the reload", n)
	}
	// The state changes go to the new pool's backend objects, which share
	// their state with the old ones.
	stay.set(answer500)
	waitFor(t, "marked down", 5*time.Second, func() bool { return !p2.Backends()[0].Healthy() })
	stay.set(answerOK)
	waitFor(t, "marked up", 5*time.Second, func() bool { return p2.Backends()[0].Healthy() })

	// New settings: the checker is replaced and probes the new path.
	cfg2 := healthConfig(t, `interval = "20ms", timeout = "20ms", rise = 1, path = "/ready"`, stay.addr)
	if err := g.Update([]*balancer.Pool{p2}, cfg2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "probe of the new path", 5*time.Second, func() bool {
		r := stay.lastRequest()
		return r != nil && r.URL.Path == "/ready"
	})
	// No [health] table any more: probes stop.
	if err := g.Update([]*balancer.Pool{p2}, map[string]*config.Pool{"p": {}}); err != nil {
		t.Fatal(err)
	}
	if len(g.checkers) != 0 {
		t.Fatalf("%d checkers left without health settings", len(g.checkers))
	}
	n := stay.probes.Load()
	time.Sleep(5 * 20 * time.Millisecond)
	if d := stay.probes.Load() - n; d > 0 {
		t.Errorf("%d probes after checks were turned off", d)
	}
}

// A reload that removes a pool's [health] table leaves no verdict of the
// checks standing: a backend they had taken down takes traffic again (as
// it would after a restart with that file) instead of staying down with
// nothing left to bring it back.
func TestRemovedChecksReleaseTheirVerdict(t *testing.T) {
	be := newBackend(t, 0)
	be.set(answer500)
	cfg := healthConfig(t, `interval = "20ms", timeout = "20ms"`, be.addr)
	p1 := poolOf(t, nil, be.addr)
	g, err := StartAll([]*balancer.Pool{p1}, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	waitFor(t, "marked down", 5*time.Second, func() bool { return !p1.Backends()[0].Healthy() })

	p2 := poolOf(t, p1, be.addr)
	if err := g.Update([]*balancer.Pool{p2}, map[string]*config.Pool{"p": {}}); err != nil {
		t.Fatal(err)
	}
	b := p2.Backends()[0]
	if !b.Healthy() || !b.Usable() {
		t.Errorf("after its checks were removed the backend is healthy=%v usable=%v, want both", b.Healthy(), b.Usable())
	}
	if c := b.State().LastCheck; c != nil {
		t.Errorf("last check %+v still shown after the checks were removed", *c)
	}
	ts := p2.State().Transitions
	if len(ts) == 0 || ts[len(ts)-1].To != "up" || ts[len(ts)-1].Reason != "active checks removed" {
		t.Errorf("transitions %+v, want the last one up, because the checks were removed", ts)
	}
}

// startChecker checks cfg and starts a checker of pool, as Group.Update
// does for each pool.
func startChecker(pool *balancer.Pool, cfg *config.Health, log *slog.Logger) (*Checker, error) {
	if err := checkSettings(pool, cfg); err != nil {
		return nil, err
	}
	return start(pool, cfg, log), nil
}
