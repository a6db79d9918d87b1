package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/portico/portico/admin"
	"github.com/portico/portico/config"
	"github.com/portico/portico/proxy"
)

// Listener names, in the order they are set up: HTTPS first, because the
// plain listener's redirect names its port.
var listenerNames = []string{"https", "http", "admin"}

// listenerKeys are the configuration keys of the listeners, for problems.
var listenerKeys = map[string]string{"http": "server.http_addr", "https": "server.https_addr", "admin": "server.admin_addr"}

// slot is one listener as configured: its socket and the generation of
// server now serving it.
type slot struct {
	addr string // as configured
	ln   *proxy.Listener
	gen  *proxy.Generation
	spec any // what gen's server was built from
}

// wantedAddrs are the listen addresses cfg asks for, by listener name.
func wantedAddrs(cfg *config.Config) map[string]string {
	want := map[string]string{"http": cfg.Server.HTTPAddr}
	if cfg.Server.HTTPSAddr != "" {
		want["https"] = cfg.Server.HTTPSAddr
	}
	if cfg.Server.AdminAddr != config.Off {
		want["admin"] = cfg.Server.AdminAddr
	}
	return want
}

// listenerPlan is the sockets a configuration will listen on: sockets kept,
// taken over from another listener (swapped addresses) or from one handed
// over (an address given up, then asked for again), and sockets newly
// bound, all before anything changes, so that a bind failure refuses the
// reload with the old listeners untouched.
type listenerPlan struct {
	sockets map[string]*proxy.Listener // by listener name
	bound   []*proxy.Listener          // bound for this plan
	specs   map[string]any             // what each listener's server is built from
	servers map[string]*http.Server    // new servers, for listeners whose socket or spec changed
}

func (in *instance) planListeners(cfg *config.Config) (*listenerPlan, error) {
	want := wantedAddrs(cfg)
	plan := &listenerPlan{sockets: map[string]*proxy.Listener{}, specs: map[string]any{}, servers: map[string]*http.Server{}}
	// A socket no longer wanted by its own listener may serve another that
	// asks for its address: addresses can be swapped, or moved back.
	var spare []*proxy.Listener
	for name, s := range in.slots {
		if addr, ok := want[name]; !ok || !boundTo(addr, s.ln.Addr()) {
			spare = append(spare, s.ln)
		}
	}
	for ln := range in.handover {
		spare = append(spare, ln)
	}
	var problems config.Problems
	for _, name := range listenerNames {
		addr, ok := want[name]
		if !ok {
			continue
		}
		if s := in.slots[name]; s != nil && boundTo(addr, s.ln.Addr()) {
			plan.sockets[name] = s.ln
			continue
		}
		if i := slices.IndexFunc(spare, func(ln *proxy.Listener) bool { return boundTo(addr, ln.Addr()) }); i >= 0 {
			plan.sockets[name] = spare[i]
			spare = slices.Delete(spare, i, i+1)
			continue
		}
		ln, err := proxy.Listen(addr, in.log)
		if err != nil {
			problems = append(problems, cfg.Problem(listenerKeys[name], "cannot listen on %s: %v", addr, unwrapOp(err)))
			continue
		}
		plan.sockets[name] = ln
		plan.bound = append(plan.bound, ln)
	}
	if len(problems) > 0 {
		plan.abandon()
		return nil, problems
	}
	for name, ln := range plan.sockets {
		spec := serverSpec(name, cfg, plan.httpsPort())
		plan.specs[name] = spec
		if old := in.slots[name]; old != nil && old.ln == ln && reflect.DeepEqual(old.spec, spec) {
			continue
		}
		srv, err := in.newServer(name, cfg, plan.httpsPort())
		if err != nil {
			plan.abandon()
			return nil, fmt.Errorf("%s listener: %w", name, err)
		}
		plan.servers[name] = srv
	}
	return plan, nil
}

// httpsPort is the port the plain listener's redirect names.
func (p *listenerPlan) httpsPort() string {
	if ln := p.sockets["https"]; ln != nil {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		return port
	}
	return ""
}

// boundTo reports whether a socket bound at bound serves the configured
// address addr: the same port (":0", any port, is served by whichever the
// socket got) on the same address, where any unspecified address
// (0.0.0.0, ::, none) counts as the same.
func boundTo(addr string, bound net.Addr) bool {
	host, port, err := net.SplitHostPort(addr)
	b, ok := bound.(*net.TCPAddr)
	if err != nil || !ok || (port != "0" && port != strconv.Itoa(b.Port)) {
		return false
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		return b.IP.IsUnspecified()
	}
	ip := net.ParseIP(host)
	if ip == nil { // a name: resolved when it was bound
		ips, err := net.LookupIP(host)
		return err == nil && slices.ContainsFunc(ips, b.IP.Equal)
	}
	return ip.Equal(b.IP)
}

func (p *listenerPlan) uses(ln *proxy.Listener) bool {
	for _, l := range p.sockets {
		if l == ln {
			return true
		}
	}
	return false
}

// abandon closes what the plan bound: the reload is refused.
func (p *listenerPlan) abandon() {
	for _, ln := range p.bound {
		ln.Close()
	}
}

// unwrapOp drops net.OpError's "listen tcp ADDR:" prefix, which the
// problem states already.
func unwrapOp(err error) error {
	if oe, ok := err.(*net.OpError); ok && oe.Err != nil {
		return oe.Err
	}
	return err
}

// servePlan puts the plan in force: a listener whose socket or server
// settings changed gets a new server generation, and the one it replaces
// retires. A socket given up keeps accepting for drain_timeout, served by
// its retired generation, so that clients that have not learned of a new
// address yet are not refused; then it closes.
func (in *instance) servePlan(cfg *config.Config, plan *listenerPlan) {
	next := map[string]*slot{}
	in.conns.SetLimits(cfg.Server.MaxConns, cfg.Server.MaxConnsPerIP)
	for _, name := range listenerNames {
		ln, ok := plan.sockets[name]
		if !ok {
			continue
		}
		if name == "admin" { // the operator's way in stays open under a flood
			ln.LimitConns(nil)
		} else {
			ln.LimitConns(in.conns)
		}
		srv := plan.servers[name]
		if srv == nil { // same socket, same server settings
			old := in.slots[name]
			old.addr = wantedAddrs(cfg)[name]
			next[name] = old
			continue
		}
		gen, prev := ln.Serve(srv, in.trackConns(name, srv))
		in.track(name, gen)
		if prev != nil {
			prev.Retire()
		}
		delete(in.handover, ln)
		next[name] = &slot{addr: wantedAddrs(cfg)[name], ln: ln, gen: gen, spec: plan.specs[name]}
		in.log.Info("listening", "listener", name, "addr", ln.Addr().String())
	}
	for name, old := range in.slots {
		if !plan.uses(old.ln) {
			in.handOver(name, old, cfg.Server.DrainTimeout.Duration)
		}
	}
	in.slots = next
	var bound []admin.Listener
	for _, name := range listenerNames {
		if s := next[name]; s != nil {
			bound = append(bound, admin.Listener{Name: name, Addr: s.ln.Addr().String()})
		}
	}
	in.bound.Store(&bound)
}

// handOver retires a listener's socket: it accepts for drain more, its
// generation closing each connection after a request, then closes.
func (in *instance) handOver(name string, s *slot, drain time.Duration) {
	s.gen.Retire()
	token := &struct{ string }{name}
	in.handover[s.ln] = token
	in.bg.Go(func() {
		t := time.NewTimer(drain)
		defer t.Stop()
		select {
		case <-in.ctx.Done():
			return // shutdown closes it
		case <-t.C:
		}
		in.mu.Lock()
		defer in.mu.Unlock()
		if in.closing || in.handover[s.ln] != token { // shutdown closes it, or it was taken back
			return
		}
		delete(in.handover, s.ln)
		s.ln.Close()
		in.log.Info("stopped listening", "listener", name, "addr", s.ln.Addr().String())
	})
}

// serverSpec is what a listener's server is built from: a new generation
// starts when it changes. Anything under [server] counts, so that a key
// added later cannot be missed; the HTTP listener also depends on the
// HTTPS port it redirects to.
func serverSpec(name string, cfg *config.Config, httpsPort string) any {
	if name == "admin" {
		// The token and admin_pprof are read per request (adminOptions).
		type admin struct{ readHeader, idle time.Duration }
		return admin{cfg.Server.ReadHeaderTimeout.Duration, cfg.Server.IdleTimeout.Duration}
	}
	type spec struct {
		server    config.Server
		httpsPort string
	}
	sp := spec{server: cfg.Server}
	// Keys that concern the request path or the process, not the server.
	sp.server.HTTPAddr, sp.server.HTTPSAddr, sp.server.AdminAddr = "", "", ""
	sp.server.AdminToken, sp.server.AdminPprof = "", false
	sp.server.TrustedProxies, sp.server.Trusted, sp.server.Middlewares = nil, nil, nil
	sp.server.ClientBodyTimeout, sp.server.SendTimeout = config.Duration{}, config.Duration{}
	sp.server.ShutdownTimeout, sp.server.DrainTimeout = config.Duration{}, config.Duration{}
	sp.server.WatchConfig = false
	if name == "http" && cfg.Server.RedirectHTTP {
		sp.httpsPort = httpsPort
	}
	return sp
}

func (in *instance) newServer(name string, cfg *config.Config, httpsPort string) (*http.Server, error) {
	switch name {
	case "admin":
		// An idle timeout, so that a retired admin server's idle
		// connections end too.
		return &http.Server{Handler: admin.Handler(in.adminOptions()), ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.Duration,
			IdleTimeout: cfg.Server.IdleTimeout.Duration}, nil
	case "https":
		return proxy.NewTLSServer(&cfg.Server, in.handler, in.tlsConfig.Clone(), in.log)
	}
	var plain http.Handler = in.handler
	if cfg.Server.RedirectHTTP {
		plain = proxy.Redirect(httpsPort)
	}
	return proxy.NewServer(&cfg.Server, in.certs.HTTPHandler(plain), in.log)
}

// track records a listener's generation until its last connection ends,
// for shutdown.
func (in *instance) track(name string, g *proxy.Generation) {
	in.gensMu.Lock()
	in.gens[g] = name
	in.gensMu.Unlock()
	in.bg.Go(func() {
		select {
		case <-g.Done():
			in.gensMu.Lock()
			delete(in.gens, g)
			in.gensMu.Unlock()
		case <-in.ctx.Done():
		}
	})
}

// shutdownGens shuts the generations of the listeners named down, all at
// once; those still busy when ctx ends are closed.
func (in *instance) shutdownGens(ctx context.Context, names ...string) {
	in.gensMu.Lock()
	var gens []*proxy.Generation
	for g, name := range in.gens {
		if slices.Contains(names, name) {
			gens = append(gens, g)
			delete(in.gens, g)
		}
	}
	in.gensMu.Unlock()
	var wg sync.WaitGroup
	for _, g := range gens {
		wg.Go(func() {
			if g.Shutdown(ctx) != nil {
				_ = g.Close()
			}
		})
	}
	wg.Wait()
}
