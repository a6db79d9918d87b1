package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/portico/portico/config"
	"github.com/portico/portico/internal/testserve"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// reloadable is a proxy whose snapshot a test replaces.
type reloadable struct {
	h    *Handler
	addr string
	url  string
}

func startReloadable(t *testing.T, cfg *config.Config) *reloadable {
	t.Helper()
	snap, err := NewSnapshot(cfg, discardLog)
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(snap)
	t.Cleanup(func() { h.Snapshot().Close() })
	srv, err := NewServer(&cfg.Server, h, discardLog)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveFront(t, srv, listenLoopback(t))
	return &reloadable{h: h, addr: addr, url: "http://" + addr}
}

// reload swaps in the snapshot of cfg and drains the old one's leftovers
// within drain. The returned channel closes when the drain is over; the
// drain ends with the test.
func (r *reloadable) reload(t *testing.T, cfg *config.Config, drain time.Duration) (*Snapshot, <-chan struct{}) {
	t.Helper()
	next, err := NewSnapshot(cfg, discardLog, WithPrevious(r.h.Snapshot()))
	if err != nil {
		t.Fatal(err)
	}
	r.h.Swap(next)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		next.Drain(ctx, drain)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return next, done
}

// countedBackend is startBackend with its connections counted.
func countedBackend(t *testing.T, h http.HandlerFunc) (*backend, *testserve.Conns) {
	t.Helper()
	b := &backend{}
	b.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		h(w, r)
	}))
	cc := &testserve.Conns{}
	cc.Track(b.Config)
	b.Start()
	t.Cleanup(b.Close)
	return b, cc
}

func waitCond(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > ioTimeout {
			t.Fatalf("%s: not within %v", what, ioTimeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

// A reload keeps the state and the idle connections of the backends it
// keeps, gives new ones their own, and closes a removed backend's idle
// connections at once.
func TestReloadKeepsBackendStateAndConnections(t *testing.T) {
	kept, keptConns := countedBackend(t, textHandler("ok"))
	removed, removedConns := countedBackend(t, textHandler("ok"))
	added, _ := countedBackend(t, textHandler("ok"))
	cfg1 := parseConfig(t, poolConfig("retries = 0", kept.URL, removed.URL), nil)
	p := startReloadable(t, cfg1)
	c := newClient(t)
	for range 4 {
		get(t, c, p.url, "")
	}
	old := p.h.Snapshot()
	oldUp := old.upstreams["p"]
	oldUp.pool.Backends()[0].SetUsable(false) // as a failed probe would

	cfg2 := parseConfig(t, poolConfig("retries = 1\nslow_start = \"1m\"", kept.URL, added.URL), nil)
	next, _ := p.reload(t, cfg2, time.Minute)
	up := next.upstreams["p"]
	if up.conns[0] != oldUp.conns[0] {
		t.Error("the kept backend got new transports, losing its idle connections")
	}
	if up.conns[1] == oldUp.conns[1] {
		t.Error("the added backend shares the removed one's transports")
	}
	if b := up.pool.Backends()[0]; b.Healthy() || b == oldUp.pool.Backends()[0] {
		t.Errorf("kept backend: healthy %v, same object %v; want its successor, still down", b.Healthy(), b == oldUp.pool.Backends()[0])
	}
	if up.budget != oldUp.budget {
		t.Error("retry budget started afresh though retry_budget_percent did not change")
	}
	waitCond(t, "the removed backend's idle connection closed", func() bool {
		return removedConns.Open() == 0
	})

	up.pool.Backends()[0].SetUsable(true)
	opened := keptConns.Opened.Load()
	for range 6 {
		if _, body := get(t, c, p.url, ""); body != "ok" {
			t.Fatalf("after reload: %q", body)
		}
	}
	if n := keptConns.Opened.Load() - opened; n != 0 {
		t.Errorf("the kept backend's connection was not reused: %d new connections", n)
	}
	if removed.hits.Load() != 2 || added.hits.Load() == 0 {
		t.Errorf("hits: removed %d (want the 2 before the reload), added %d", removed.hits.Load(), added.hits.Load())
	}
}

// Changing how a pool connects (here dial_timeout) gives its backends new
// transports; the old connections close as they go idle.
func TestReloadWithNewTransportSettingsReplacesConnections(t *testing.T) {
	b, cc := countedBackend(t, textHandler("ok"))
	p := startReloadable(t, parseConfig(t, poolConfig("", b.URL), nil))
	c := newClient(t)
	get(t, c, p.url, "")
	before := p.h.Snapshot().upstreams["p"].conns[0]
	next, _ := p.reload(t, parseConfig(t, poolConfig(`dial_timeout = "3s"`, b.URL), nil), time.Minute)
	if next.upstreams["p"].conns[0] == before {
		t.Fatal("transports kept though dial_timeout changed")
	}
	waitCond(t, "old connection closed", func() bool { return cc.Ended.Load() == 1 })
	get(t, c, p.url, "")
	if cc.Opened.Load() != 2 {
		t.Errorf("%d backend connections, want 2 (one per transport)", cc.Opened.Load())
	}
}

// sseBackend streams events on /events and upgrades elsewhere.
func sseBackend(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/events" {
		upgradeEcho(w, r)
		return
	}
	testserve.Events(w, r)
}

// echoes reports whether an upgraded connection still echoes.
func echoes(conn net.Conn, br *bufio.Reader) bool {
	_ = conn.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(conn, "ping"); err != nil {
		return false
	}
	got := make([]byte, 4)
	_, err := io.ReadFull(br, got)
	return err == nil && string(got) == "ping"
}

// Upgraded connections and event streams to a backend that stays are never
// cut by a reload; those to a removed backend are cut when drain_timeout
// is up, not before.
func TestDrainCutsOnlyRemovedBackendsStreamsAfterTimeout(t *testing.T) {
	stay := startBackend(t, sseBackend)
	gone := startBackend(t, sseBackend)
	doc := func(withGone bool) string {
		s := "[pools.stay]\nbackends = [{ url = \"" + stay.URL + "\" }]\n[[routes]]\npath_prefix = \"/\"\npool = \"stay\"\n"
		if withGone {
			s += "[pools.gone]\nbackends = [{ url = \"" + gone.URL + "\" }]\n[[routes]]\npath_prefix = \"/gone\"\nstrip_prefix = true\npool = \"gone\"\n"
		}
		return s
	}
	p := startReloadable(t, parseConfig(t, doc(true), nil))

	stayConn, stayBR := startUpgrade(t, p.addr)
	goneConn, goneBR := dialRaw(t, p.addr)
	writeRaw(t, goneConn, strings.Replace(upgradeRequest, "/ws", "/gone/ws", 1))
	if res, err := http.ReadResponse(goneBR, nil); err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade to the backend to remove: %v %v", res, err)
	}
	events, err := http.Get(p.url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer events.Body.Close()
	sse := bufio.NewReader(events.Body)

	const drain = 600 * time.Millisecond
	start := time.Now()
	_, done := p.reload(t, parseConfig(t, doc(false), nil), drain)
	if !echoes(goneConn, goneBR) {
		t.Fatal("the removed backend's upgraded connection was cut before drain_timeout")
	}
	<-done
	if took := time.Since(start); took < drain {
		t.Fatalf("drain returned after %v, before drain_timeout %v", took, drain)
	}
	_ = goneConn.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := goneBR.ReadByte(); err == nil {
		t.Error("the removed backend's upgraded connection is still open after drain_timeout")
	}
	if !echoes(stayConn, stayBR) {
		t.Error("the upgraded connection to the backend that stays was cut")
	}
	for range 3 {
		if line, err := sse.ReadString('\n'); err != nil || line != "data: tick\n" {
			t.Fatalf("event stream after the drain: %q %v", line, err)
		}
		_, _ = sse.ReadString('\n')
	}
	_ = stayConn.Close()
}

// Every key of a pool either changes how its backends are connected to, and
// is compared by sameTransport, or does not: a new key must be put in one
// of these lists, so that a reload never keeps connections made under
// settings that changed.
func TestEveryPoolKeyIsClassified(t *testing.T) {
	transport := map[string]bool{
		"dial_timeout": true, "response_header_timeout": true, "max_idle_conns_per_backend": true, "max_response_header_bytes": true,
		"tls_server_name": true, "tls_ca_file": true, "tls_insecure_skip_verify": true,
	}
	other := map[string]bool{
		"balance": true, "backends": true, "retries": true, "health": true, "passive": true, "panic_mode": true,
		"max_conns": true, "queue_timeout": true, "retry_budget_percent": true, "slow_start": true, "ewma_decay": true,
	}
	var walk func(reflect.Type)
	walk = func(typ reflect.Type) {
		for f := range typ.Fields() {
			if f.Anonymous {
				walk(f.Type)
				continue
			}
			tag := strings.Split(f.Tag.Get("toml"), ",")[0]
			if tag == "-" || tag == "" {
				continue
			}
			if !transport[tag] && !other[tag] {
				t.Errorf("pool key %q is in neither list: does changing it change how backends are connected to?", tag)
			}
		}
	}
	walk(reflect.TypeFor[config.Pool]())
}

// pacedWatch streams a health status each time the test sends on next,
// until the client leaves.
type pacedWatch struct {
	healthpb.UnimplementedHealthServer
	next chan struct{}
}

func (p pacedWatch) Watch(_ *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	for {
		select {
		case <-p.next:
		case <-stream.Context().Done():
			return nil
		}
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}); err != nil {
			return err
		}
	}
}

// A gRPC stream through Portico to an h2c backend that stays carries on
// across reloads and past drain_timeout.
func TestGRPCStreamSurvivesReloads(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	watch := pacedWatch{next: make(chan struct{})}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, watch)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	other := startBackend(t, textHandler("ok"))
	doc := func(extra string) *config.Config {
		return parseConfig(t, "[server]\nh2c = true\n"+poolDoc("h2c://"+ln.Addr().String())+anyRoute+extra, nil)
	}
	p := startReloadable(t, doc(""))
	conn, err := grpc.NewClient("passthrough:///"+p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	stream, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recv := func(when string) {
		t.Helper()
		watch.next <- struct{}{}
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("stream %s: %v", when, err)
		}
	}
	recv("before the reloads")
	_, done := p.reload(t, doc("[pools.other]\nbackends = [{ url = \""+other.URL+"\" }]\n[[routes]]\npath_prefix = \"/other\"\npool = \"other\"\n"), 50*time.Millisecond)
	recv("after a reload")
	<-done
	_, done = p.reload(t, doc(""), 50*time.Millisecond)
	<-done
	recv("after drain_timeout of a reload that removed another pool")
}
