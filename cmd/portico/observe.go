package main

import (
	"context"
	"sync"
	"time"

	"github.com/portico/portico/admin"
	"github.com/portico/portico/balancer"
	"github.com/portico/portico/config"
	"github.com/portico/portico/metrics"
	"github.com/portico/portico/proxy"
	"github.com/portico/portico/tlsmgr"
)

// startTime is when the process started, for uptime.
var startTime = time.Now()

// adminOptions wires what the admin listener shows to the running parts:
// the snapshot in force, the certificates, the metrics. Metrics read the
// same state at scrape time.
func adminOptions(cfg *config.Config, h *proxy.Handler, certs *tlsmgr.Manager, m *metrics.Metrics, ready *admin.Readiness) admin.Options {
	pools := func() []*balancer.Pool { return h.Snapshot().Pools() }
	o := admin.Options{
		Version: versionString(),
		Started: startTime,
		Config:  func() *config.Config { return cfg },
		Pools:   pools,
		Metrics: m,
		Ready:   ready,
		Token:   string(cfg.Server.AdminToken),
		Pprof:   cfg.Server.AdminPprof,
	}
	m.WatchPools(pools)
	if certs != nil {
		o.Certificates = certs.Certificates
		m.WatchCertificates(certs.Certificates)
	}
	return o
}

// runTicker closes each second of the dashboard's history until ctx ends
// or the returned function is called, which waits for it.
func runTicker(ctx context.Context, m *metrics.Metrics) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { m.Run(ctx) })
	return func() {
		cancel()
		wg.Wait()
	}
}
