package main

import (
	"net"
	"net/http"
	"time"

	"github.com/portico/portico/admin"
	"github.com/portico/portico/balancer"
	"github.com/portico/portico/config"
	"github.com/portico/portico/metrics"
	"github.com/portico/portico/middleware"
	"github.com/portico/portico/proxy"
	"github.com/portico/portico/tlsmgr"
)

// startTime is when the process started, for uptime.
var startTime = time.Now()

// adminOptions wires what the admin listener shows to the running parts,
// read per request so that it always shows what is in force: the
// configuration (admin_token and admin_pprof included), the snapshot's
// pools, the listeners, the certificates, the metrics. Metrics read the
// same state at scrape time.
func (in *instance) adminOptions() admin.Options {
	return admin.Options{
		Version:      versionString(),
		Started:      startTime,
		Config:       func() *config.Config { return in.running.Load() },
		Pools:        in.pools,
		Listeners:    in.listeners,
		Certificates: in.certificates,
		Metrics:      in.metrics,
		Ready:        &in.ready,
		Token:        func() string { return string(in.running.Load().Server.AdminToken) },
		Pprof:        func() bool { return in.running.Load().Server.AdminPprof },
		Reload:       func() admin.ReloadResult { return in.reload("admin API") },
	}
}

func (in *instance) pools() []*balancer.Pool { return in.handler.Snapshot().Pools() }

// listeners are the bound listeners; none until the first configuration's
// are all serving (the admin listener, set up last, may take a request
// just before they are recorded).
func (in *instance) listeners() []admin.Listener {
	if b := in.bound.Load(); b != nil {
		return *b
	}
	return nil
}

// certificates lists those of the manager in service; none without HTTPS.
func (in *instance) certificates() []tlsmgr.CertInfo {
	if m := in.certs.Load(); m != nil {
		return m.Certificates()
	}
	return nil
}

// startMetrics starts recording metrics, once a configuration has an admin
// listener to read them from: without one nobody could, and the request
// path is spared the cost.
func (in *instance) startMetrics(cfg *config.Config) {
	if in.metrics != nil || cfg.Server.AdminAddr == config.Off {
		return
	}
	m := metrics.New(versionString())
	m.WatchPools(in.pools)
	m.WatchCertificates(in.certificates)
	m.WatchAccessLogDrops(in.accessDropped)
	m.WatchConnLimit(in.conns.Refused)
	in.bg.Go(func() { m.Run(in.ctx) }) // closes each second of the dashboard's history
	in.metrics = m
}

// trackConns counts a proxy listener's connections in the metrics.
func (in *instance) trackConns(name string, srv *http.Server) func(net.Listener) net.Listener {
	if name == "admin" {
		return nil
	}
	m := in.metrics
	return func(ln net.Listener) net.Listener { return m.TrackConns(name, srv, ln) }
}

// snapshotOptions are what a snapshot is built with: the one it replaces
// (nil at start), the metrics and the access log in force.
func (in *instance) snapshotOptions(prev *proxy.Snapshot, access *accessLog) []proxy.Option {
	var opts []proxy.Option
	if prev != nil {
		opts = append(opts, proxy.WithPrevious(prev))
	}
	if m := in.metrics; m != nil {
		opts = append(opts, proxy.WithMetrics(m), proxy.WithRejections(func(mw, reason string) middleware.Counter {
			return m.Rejections(mw, reason)
		}))
	}
	if access != nil {
		opts = append(opts, proxy.WithAccessLog(access))
	}
	if in.shared != nil {
		opts = append(opts, proxy.WithGlobal(in.shared))
	}
	return opts
}

// retainMetrics drops the series of what cfg does not have (routes, pools,
// backends, middlewares), once it is in force, or, after a refused reload,
// the series that the refused configuration's snapshot made (cfg is then
// the one still in force; nil at start: nothing to keep).
func (in *instance) retainMetrics(cfg *config.Config) {
	if in.metrics == nil || cfg == nil {
		return
	}
	k := metrics.Kept{Pools: make(map[string][]string, len(cfg.Pools))}
	for _, r := range cfg.Routes {
		k.Routes = append(k.Routes, r.Name)
	}
	for name, p := range cfg.Pools {
		for _, b := range p.Backends {
			k.Pools[name] = append(k.Pools[name], b.Parsed.Host)
		}
	}
	for name := range cfg.Middlewares {
		k.Middlewares = append(k.Middlewares, name)
	}
	in.metrics.Retain(k)
}
