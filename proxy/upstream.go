package proxy

import (
	"log/slog"
	"time"

	"github.com/portico/portico/balancer"
	"github.com/portico/portico/config"
	"github.com/portico/portico/metrics"
	"github.com/portico/portico/proxy/h1"
)

// upstream is a pool at run time: the balancer's pool, each backend's
// transports, and the retry rule.
type upstream struct {
	pool    *balancer.Pool
	conns   []*transports // by Backend.Index
	retries int
	budget  *retryBudget
	stats   *metrics.Pool // nil without metrics
	log     *slog.Logger
	cfg     *config.Pool // for the next reload to compare against

	responseHeaderTimeout time.Duration
}

// newUpstream builds the pool named name. prev is the pool of that name in
// the snapshot being replaced, or nil: a backend that was in it (same URL)
// keeps its state, and its connections too while the transport settings
// stay the same.
func newUpstream(name string, pc *config.Pool, prev *upstream, log *slog.Logger, m *metrics.Metrics) (*upstream, error) {
	var before map[string]int // backend URL -> index in prev
	keepConns := false
	if prev != nil {
		before = make(map[string]int, len(prev.conns))
		for i, b := range prev.pool.Backends() {
			before[b.URL().String()] = i
		}
		keepConns = sameTransport(prev.cfg, pc)
	}
	backends := make([]*balancer.Backend, 0, len(pc.Backends))
	conns := make([]*transports, 0, len(pc.Backends))
	hosts := make([]string, 0, len(pc.Backends))
	for _, bc := range pc.Backends {
		var b *balancer.Backend
		var t *transports
		var err error
		if i, ok := before[bc.Parsed.String()]; ok {
			b, err = prev.pool.Backends()[i].Successor(bc.Weight)
			if keepConns {
				t = prev.conns[i]
			}
		} else {
			b, err = balancer.NewBackend(bc.Parsed, bc.Weight)
		}
		if err != nil {
			return nil, err
		}
		if t == nil {
			t = newTransports(pc, bc.Parsed.Host)
		}
		backends = append(backends, b)
		conns = append(conns, t)
		hosts = append(hosts, bc.Parsed.Host)
	}
	var pool *balancer.Pool
	var err error
	if prev != nil {
		pool, err = prev.pool.Next(backends, poolOptions(pc, log))
	} else {
		pool, err = balancer.NewPool(name, backends, poolOptions(pc, log))
	}
	if err != nil {
		return nil, err
	}
	budget := newRetryBudget(pc.RetryBudgetPercent)
	if prev != nil && prev.cfg.RetryBudgetPercent == pc.RetryBudgetPercent {
		budget = prev.budget // what retries have spent stays spent
	}
	return &upstream{
		pool: pool, conns: conns, retries: pc.Retries,
		budget: budget, stats: m.Pool(name, hosts), log: log, cfg: pc,
		responseHeaderTimeout: pc.ResponseHeaderTimeout.Duration,
	}, nil
}

// h1Pool returns the HTTP/1.1 connections to b, or nil when b is reached
// over HTTP/2.
func (u *upstream) h1Pool(b *balancer.Backend, upgrade bool) *h1.Pool {
	return u.conns[b.Index()].h1Pool(upgrade)
}

// useH2 sends b's requests through the HTTP/2 transport from now on.
func (u *upstream) useH2(b *balancer.Backend) { u.conns[b.Index()].h2.Store(true) }

// dialError marks a failure to connect: the request never left, so any
// request, whatever its method or body, may go to another backend.
type dialError struct{ err error }

func (e dialError) Error() string { return e.err.Error() }
func (e dialError) Unwrap() error { return e.err }
