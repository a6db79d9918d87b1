// Package balancer owns pools of backends, the per-backend state that the
// request path, health checks and the admin side share (in-flight count,
// usable flag), and the policies that pick a backend for a request.
//
// State lives in atomics and a pool's backend list never changes after
// construction, so picking takes no lock shared across requests. A reload
// builds new pools. The package imports no other Portico package.
package balancer

import (
	"errors"
	"fmt"
	"net/url"
	"sync/atomic"
)

// Backend is one server of a pool.
type Backend struct {
	url    *url.URL
	weight int
	index  int // position in its pool, for Tried

	inflight atomic.Int64
	down     atomic.Bool // zero value: usable, so a new backend takes traffic at once
}

// NewBackend returns a usable backend. weight must be at least 1.
func NewBackend(u *url.URL, weight int) (*Backend, error) {
	if u == nil || u.Host == "" {
		return nil, errors.New("balancer: backend needs a URL with a host")
	}
	if weight < 1 {
		return nil, fmt.Errorf("balancer: backend %s: weight must be at least 1, got %d", u.Host, weight)
	}
	return &Backend{url: u, weight: weight}, nil
}

// URL is the backend's scheme and host. Callers must not modify it.
func (b *Backend) URL() *url.URL { return b.url }

// Weight is the backend's configured share of traffic.
func (b *Backend) Weight() int { return b.weight }

// Usable reports whether the backend may be picked.
func (b *Backend) Usable() bool { return !b.down.Load() }

// SetUsable changes the usable flag and reports whether it changed.
func (b *Backend) SetUsable(usable bool) (changed bool) {
	return b.down.Swap(!usable) == usable
}

// InFlight is the number of requests the backend is serving now.
func (b *Backend) InFlight() int64 { return b.inflight.Load() }

// Acquire counts a request as in flight; every Acquire needs one Release.
func (b *Backend) Acquire() { b.inflight.Add(1) }

// Release ends a request counted by Acquire.
func (b *Backend) Release() { b.inflight.Add(-1) }

// Tried is the set of a pool's backends a request has already been sent to,
// so that a retry goes elsewhere. It is a value, so picking allocates nothing.
// Pools larger than 64 backends share bits (index mod 64): a retry may then
// also pass over an untried backend, which is harmless.
type Tried uint64

// Add returns the set with b added.
func (t Tried) Add(b *Backend) Tried { return t | 1<<(b.index%64) }

// Has reports whether b is in the set.
func (t Tried) Has(b *Backend) bool { return t&(1<<(b.index%64)) != 0 }

// eligible reports whether b may take a request that has tried t.
func eligible(b *Backend, t Tried) bool { return b.Usable() && !t.Has(b) }

// Policy picks a backend among a pool's backends, skipping those that are not
// usable or already tried; nil means none is eligible. Implementations must
// be safe for concurrent use and should not allocate.
type Policy interface {
	Pick(backends []*Backend, tried Tried) *Backend
}

// Pool is a named, fixed set of backends with the policy that picks among them.
type Pool struct {
	name     string
	backends []*Backend
	policy   Policy
}

// Policy names accepted by NewPool.
const (
	RoundRobin = "round_robin"
	LeastConn  = "least_conn"
)

// NewPool builds a pool. The backends must not belong to another pool.
func NewPool(name, policy string, backends []*Backend) (*Pool, error) {
	if len(backends) == 0 {
		return nil, fmt.Errorf("balancer: pool %q has no backends", name)
	}
	for i, b := range backends {
		b.index = i
	}
	p := &Pool{name: name, backends: backends}
	switch policy {
	case RoundRobin:
		p.policy = newRoundRobin(backends)
	case LeastConn:
		p.policy = &leastConn{}
	default:
		return nil, fmt.Errorf("balancer: pool %q: unknown policy %q", name, policy)
	}
	return p, nil
}

// Name is the pool's name from the configuration.
func (p *Pool) Name() string { return p.name }

// Backends lists the pool's backends. Callers must not modify the slice.
func (p *Pool) Backends() []*Backend { return p.backends }

// Pick returns an eligible backend, or nil when there is none.
func (p *Pool) Pick(tried Tried) *Backend { return p.policy.Pick(p.backends, tried) }
