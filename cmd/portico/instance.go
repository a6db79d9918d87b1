package main

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico/portico/admin"
	"github.com/portico/portico/cluster"
	"github.com/portico/portico/config"
	"github.com/portico/portico/health"
	"github.com/portico/portico/metrics"
	"github.com/portico/portico/proxy"
	"github.com/portico/portico/tlsmgr"
)

// instance is Portico running: the configuration in force and everything
// built from it. A reload (apply) builds the next of each piece from the
// current one, keeping what did not change, and puts them in force only
// once nothing can fail any more; a refused reload changes nothing.
type instance struct {
	path  string // the configuration file; "" for the quickstart
	log   *slog.Logger
	level *slog.LevelVar // nil: the level is not the configuration's

	// ready is set once the configuration is in force and every listener
	// bound, and cleared when shutdown starts: /readyz answers from it.
	ready   admin.Readiness
	metrics *metrics.Metrics // nil until a configuration has an admin listener
	access  atomic.Pointer[accessLog]

	ctx    context.Context // ends at shutdown: drains, retired servers, ACME orders
	cancel context.CancelFunc
	bg     sync.WaitGroup

	mu        sync.Mutex // one reload at a time, none once shutdown started
	closing   bool
	running   atomic.Pointer[config.Config] // the configuration in force
	handler   *proxy.Handler
	checks    *health.Group
	certs     tlsmgr.Current
	tlsConfig *tls.Config // the HTTPS listener's; each server gets a clone
	acmeStop  context.CancelFunc
	slots     map[string]*slot
	conns     *proxy.ConnLimit                      // max_conns, max_conns_per_ip: the client listeners' sockets share it
	bound     atomic.Pointer[[]admin.Listener]      // the listeners' addresses, for the admin side
	handover  map[*proxy.Listener]*struct{ string } // sockets given up, accepting until drain_timeout
	watch     *watcher

	gensMu sync.Mutex
	gens   map[*proxy.Generation]string // server generations alive, by listener name

	shared     *cluster.Client // [cluster]'s Redis, made once; nil without
	sharedFrom config.Cluster  // the settings it was made from
}

// start puts cfg in force: it binds every listener and starts serving.
// path is the file cfg came from ("" for the quickstart), for reloads.
func start(cfg *config.Config, path string, log *slog.Logger, level *slog.LevelVar) (*instance, error) {
	in := &instance{path: path, log: log, level: level, slots: map[string]*slot{}, conns: proxy.NewConnLimit(log),
		handover: map[*proxy.Listener]*struct{ string }{}, gens: map[*proxy.Generation]string{}}
	in.ctx, in.cancel = context.WithCancel(context.Background())
	in.tlsConfig = in.certs.TLSConfig()
	if _, err := in.apply(cfg); err != nil {
		in.cancel()
		in.bg.Wait()
		if in.shared != nil {
			_ = in.shared.Close()
		}
		return nil, err
	}
	in.ready.Set(true)
	return in, nil
}

// apply puts cfg in force and returns what changed.
func (in *instance) apply(cfg *config.Config) ([]config.Change, error) {
	in.startMetrics(cfg)
	if err := in.startCluster(cfg); err != nil {
		return nil, err
	}
	var prevSnap *proxy.Snapshot
	if in.handler != nil {
		prevSnap = in.handler.Snapshot()
	}
	access, err := in.nextAccessLog(cfg)
	if err != nil {
		return nil, err
	}
	snap, err := proxy.NewSnapshot(cfg, in.log, in.snapshotOptions(prevSnap, access)...)
	if err != nil {
		in.discardAccessLog(access)
		in.retainMetrics(in.running.Load())
		return nil, err
	}
	refuse := func(err error) ([]config.Change, error) {
		snap.Discard()
		in.discardAccessLog(access)
		in.retainMetrics(in.running.Load())
		return nil, err
	}
	first := in.handler == nil
	if first { // the servers planned below serve it
		in.handler = proxy.NewHandler(snap)
	}
	var certs *tlsmgr.Manager
	if cfg.TLS.Enabled() {
		var opts []tlsmgr.Option
		if in.shared != nil { // made by this reload, maybe
			opts = append(opts, tlsmgr.WithSharedStore(in.shared.Store()))
		}
		if cur := in.certs.Load(); cur != nil {
			certs, err = cur.Next(&cfg.TLS, opts...)
		} else {
			certs, err = tlsmgr.New(&cfg.TLS, in.log, opts...)
		}
		if err != nil {
			return refuse(err)
		}
	}
	plan, err := in.planListeners(cfg)
	if err != nil {
		return refuse(err)
	}
	if in.checks == nil {
		in.checks, err = health.StartAll(snap.Pools(), cfg.Pools, in.log)
	} else {
		err = in.checks.Update(snap.Pools(), cfg.Pools)
	}
	if err != nil {
		plan.abandon()
		return refuse(err)
	}

	// Nothing fails from here on.
	for _, w := range cfg.Warnings {
		in.log.Warn("configuration warning", "problem", w.Error())
	}
	if !first {
		in.handler.Swap(snap)
		in.bg.Go(func() { snap.Drain(in.ctx, cfg.Server.DrainTimeout.Duration) })
	}
	prev := in.running.Swap(cfg)
	in.retainMetrics(cfg)
	in.swapAccessLog(access, cfg.Server.DrainTimeout.Duration)
	in.certs.Store(certs)
	in.servePlan(cfg, plan)
	if in.acmeStop != nil {
		in.acmeStop()
	}
	if certs != nil {
		// After the listeners: ACME challenges arrive on them.
		var ctx context.Context
		ctx, in.acmeStop = context.WithCancel(in.ctx)
		certs.Start(ctx)
	}
	if in.level != nil {
		var level slog.Level
		_ = level.UnmarshalText([]byte(cfg.Log.Level)) // validated
		in.level.Set(level)
	}
	in.syncWatcher(cfg)
	if prev == nil {
		return nil, nil
	}
	if prev.Log.Format != cfg.Log.Format {
		in.log.Warn("log.format takes effect at the next start", "format", prev.Log.Format, "configured", cfg.Log.Format)
	}
	return config.Diff(prev.Settings(), cfg.Settings()), nil
}

// reload reads the configuration file again and puts it in force. What
// triggered it (SIGHUP, the admin API, a file change) is logged.
func (in *instance) reload(trigger string) admin.ReloadResult {
	res := admin.ReloadResult{File: in.path}
	if in.path == "" {
		res.Errors = []string{"running the built-in quickstart: there is no configuration file to reload (start Portico with -config FILE)"}
		in.log.Warn("nothing to reload", "trigger", trigger, "reason", res.Errors[0])
		return res
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closing {
		res.Errors = []string{"shutting down"}
		return res
	}
	at := time.Now()
	sdNotify(reloadingState())
	defer sdNotify("READY=1")
	cfg, err := config.Load(in.path)
	var changes []config.Change
	if err == nil {
		changes, err = in.apply(cfg)
	}
	if in.metrics != nil {
		in.metrics.ConfigReload(err == nil, at)
	}
	if err != nil {
		res.Errors = problemLines(err)
		for _, p := range res.Errors {
			in.log.Error("reload refused", "trigger", trigger, "problem", p)
		}
		in.log.Error("configuration not reloaded; the running configuration stays in force",
			"file", in.path, "trigger", trigger, "problems", len(res.Errors))
		return res
	}
	res.OK, res.Changes = true, changes
	for _, c := range changes {
		in.log.Info("configuration change", "change", c.Summary())
	}
	in.log.Info("configuration reloaded", "file", in.path, "trigger", trigger, "changes", len(changes),
		"took", time.Since(at).Round(time.Microsecond).String())
	return res
}

// problemLines writes a failed load or apply as one line per problem.
func problemLines(err error) []string {
	var ps config.Problems
	if errors.As(err, &ps) {
		lines := make([]string, len(ps))
		for i, p := range ps {
			lines[i] = p.Error()
		}
		return lines
	}
	return []string{err.Error()}
}

// addrs are the bound listener addresses.
func (in *instance) addrs() listenAddrs {
	in.mu.Lock()
	defer in.mu.Unlock()
	var a listenAddrs
	for name, s := range in.slots {
		addr := s.ln.Addr().String()
		switch name {
		case "http":
			a.http = addr
		case "https":
			a.https = addr
		case "admin":
			a.admin = addr
		}
	}
	return a
}

// socketsOf lists the sockets of the listeners named, handed-over ones
// included.
func (in *instance) socketsOf(names ...string) []*proxy.Listener {
	var out []*proxy.Listener
	for name, s := range in.slots {
		if slices.Contains(names, name) {
			out = append(out, s.ln)
		}
	}
	for ln, h := range in.handover {
		if slices.Contains(names, h.string) {
			out = append(out, ln)
		}
	}
	return out
}

// closeAll stops the sockets accepting, all at once.
func closeAll(sockets []*proxy.Listener) {
	var wg sync.WaitGroup
	for _, ln := range sockets {
		wg.Go(ln.Close)
	}
	wg.Wait()
}

// errForced is returned when a second signal cut the graceful shutdown short.
var errForced = errors.New("stopped at once by a second signal; requests still running were cut off")

// shutdown stops Portico gracefully: readiness turns false first; the
// proxy listeners stop accepting, all at once; idle keep-alive connections
// close at once and HTTP/2 clients get GOAWAY; running requests get
// shutdown_timeout to finish. The admin listener stays up until then, so
// that a load balancer polling /readyz sees 503 rather than a refused
// connection. Closing force cuts everything at once.
func (in *instance) shutdown(force <-chan struct{}) error {
	in.ready.Set(false)
	sdNotify("STOPPING=1")
	in.mu.Lock()
	in.closing = true
	in.stopWatcher()
	timeout := in.running.Load().Server.ShutdownTimeout.Duration
	proxySockets, adminSockets := in.socketsOf("http", "https"), in.socketsOf("admin")
	in.mu.Unlock()
	in.log.Info("shutting down", "timeout", timeout.String())

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var forced atomic.Bool
	go func() {
		select {
		case <-force:
			forced.Store(true)
			in.log.Warn("second signal: stopping at once")
			cancel()
		case <-ctx.Done():
		}
	}()
	closeAll(proxySockets)
	in.shutdownGens(ctx, "http", "https")
	if ctx.Err() != nil && !forced.Load() {
		in.log.Warn("requests cut off at shutdown timeout")
	}
	closeAll(adminSockets)
	in.shutdownGens(ctx, "admin")

	in.cancel() // drains, retired generations, ACME orders
	in.checks.Stop()
	in.bg.Wait()
	in.handler.Snapshot().Close()
	if in.shared != nil {
		_ = in.shared.Close() // after the snapshot: nothing decides with it any more
	}
	if a := in.access.Load(); a != nil {
		_ = a.Close() // after the listeners: the last requests are logged
	}
	if forced.Load() {
		return errForced
	}
	in.log.Info("stopped")
	return nil
}
