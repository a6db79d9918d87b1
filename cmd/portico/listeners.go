package main

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"reflect"
	"slices"
	"sync"
	"time"

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

// listenerPlan is the sockets a configuration will listen on: sockets kept
// or moved from another listener (swapped addresses), and sockets newly
// bound, before anything changes, so that a bind failure refuses the
// reload with the old listeners untouched.
type listenerPlan struct {
	sockets map[string]*proxy.Listener // by listener name
	bound   []*proxy.Listener          // bound for this plan
	release []*proxy.Listener          // in use now, not in the plan
}

func (in *instance) planListeners(cfg *config.Config) (*listenerPlan, error) {
	want := wantedAddrs(cfg)
	plan := &listenerPlan{sockets: map[string]*proxy.Listener{}}
	// A socket no longer wanted under its own name may serve another
	// listener that asks for its address: addresses can be swapped.
	spare := map[string]*proxy.Listener{}
	for name, s := range in.slots {
		if want[name] != s.addr {
			spare[s.addr] = s.ln
		}
	}
	var problems config.Problems
	for _, name := range listenerNames {
		addr, ok := want[name]
		if !ok {
			continue
		}
		if s := in.slots[name]; s != nil && s.addr == addr {
			plan.sockets[name] = s.ln
			continue
		}
		if ln := spare[addr]; ln != nil && !isAnyPort(addr) {
			delete(spare, addr)
			plan.sockets[name] = ln
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
	for _, ln := range spare {
		plan.release = append(plan.release, ln)
	}
	for name, s := range in.slots {
		if _, ok := want[name]; !ok && spare[s.addr] == nil && !plan.uses(s.ln) {
			plan.release = append(plan.release, s.ln)
		}
	}
	return plan, nil
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

// isAnyPort reports whether addr asks for any free port (":0"): two such
// listeners are two sockets, never one.
func isAnyPort(addr string) bool {
	_, port, _ := net.SplitHostPort(addr)
	return port == "0"
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
// settings changed gets a new server generation; released sockets stop
// accepting once their queued connections are handed on; then the
// generations replaced or left without a listener retire and drain.
func (in *instance) servePlan(cfg *config.Config, plan *listenerPlan) {
	next := map[string]*slot{}
	retiring := map[*proxy.Generation]bool{}
	for _, name := range listenerNames {
		ln, ok := plan.sockets[name]
		if !ok {
			continue
		}
		old := in.slots[name]
		spec := in.serverSpec(name, cfg, next)
		if old != nil && old.ln == ln && reflect.DeepEqual(old.spec, spec) {
			next[name] = old
			continue
		}
		gen, prev := ln.Serve(in.newServer(name, cfg, next))
		in.track(name, gen)
		next[name] = &slot{addr: wantedAddrs(cfg)[name], ln: ln, gen: gen, spec: spec}
		if prev != nil {
			retiring[prev] = true
		}
		in.log.Info("listening", "listener", name, "addr", ln.Addr().String())
	}
	for _, old := range in.slots {
		if !slices.ContainsFunc(slices.Collect(maps.Values(next)), func(s *slot) bool { return s.gen == old.gen }) {
			retiring[old.gen] = true
		}
	}
	for _, ln := range plan.release {
		ln.Close()
	}
	for g := range retiring {
		in.retire(g, cfg.Server.DrainTimeout.Duration)
	}
	in.slots = next
}

// serverSpec is what a listener's server is built from: a new generation
// starts when it changes. Anything under [server] counts, so that a key
// added later cannot be missed; the HTTP listener also depends on the
// HTTPS port it redirects to.
func (in *instance) serverSpec(name string, cfg *config.Config, slots map[string]*slot) any {
	if name == "admin" {
		return cfg.Server.ReadHeaderTimeout.Duration
	}
	type spec struct {
		server    config.Server
		httpsPort string
	}
	sp := spec{server: cfg.Server}
	// Keys that concern the request path or the process, not the server.
	sp.server.HTTPAddr, sp.server.HTTPSAddr, sp.server.AdminAddr = "", "", ""
	sp.server.TrustedProxies, sp.server.Trusted = nil, nil
	sp.server.ClientBodyTimeout, sp.server.SendTimeout = config.Duration{}, config.Duration{}
	sp.server.ShutdownTimeout, sp.server.DrainTimeout = config.Duration{}, config.Duration{}
	sp.server.WatchConfig = false
	if name == "http" && cfg.Server.RedirectHTTP {
		sp.httpsPort = httpsPort(slots)
	}
	return sp
}

func httpsPort(slots map[string]*slot) string {
	if s := slots["https"]; s != nil {
		_, port, _ := net.SplitHostPort(s.ln.Addr().String())
		return port
	}
	return ""
}

func (in *instance) newServer(name string, cfg *config.Config, slots map[string]*slot) *http.Server {
	switch name {
	case "admin":
		return &http.Server{Handler: in.admin, ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.Duration}
	case "https":
		srv, err := proxy.NewTLSServer(&cfg.Server, in.handler, in.tlsConfig.Clone(), in.log)
		if err != nil { // validated settings cannot fail it
			panic(fmt.Sprintf("https listener: %v", err))
		}
		return srv
	}
	var plain http.Handler = in.handler
	if cfg.Server.RedirectHTTP {
		plain = proxy.Redirect(httpsPort(slots))
	}
	srv, err := proxy.NewServer(&cfg.Server, in.certs.HTTPHandler(plain), in.log)
	if err != nil {
		panic(fmt.Sprintf("http listener: %v", err))
	}
	return srv
}

// track records a listener's generation until it is done, for shutdown.
func (in *instance) track(name string, g *proxy.Generation) {
	in.gensMu.Lock()
	in.gens[g] = name
	in.gensMu.Unlock()
}

// retire lets a replaced generation finish: it closes each connection after
// its next response (GOAWAY on HTTP/2), and once drain has passed it shuts
// down: idle connections close, running requests finish.
func (in *instance) retire(g *proxy.Generation, drain time.Duration) {
	g.Retire()
	in.bg.Go(func() {
		t := time.NewTimer(drain)
		defer t.Stop()
		select {
		case <-in.ctx.Done():
			return // shutdown takes over
		case <-t.C:
		}
		if g.Shutdown(in.ctx) == nil {
			in.gensMu.Lock()
			delete(in.gens, g)
			in.gensMu.Unlock()
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
