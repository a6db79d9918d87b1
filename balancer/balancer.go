// Package balancer owns pools of backends, the per-backend state that the
// request path, health checks and the admin side share (in-flight count,
// usable flag, passive outlier detection, latency), and the policies that
// pick a backend for a request.
//
// State lives in atomics and a pool's backend list never changes after
// construction, so picking takes no lock shared across requests. A reload
// builds new pools whose backends succeed the old ones (Backend.Successor,
// Pool.Next) and share their state. The package imports no other Portico
// package.
package balancer

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Backend is one server of a pool.
type Backend struct {
	url      *url.URL
	weight   int
	index    int   // position in its pool, for Tried
	pool     *Pool // set by NewPool
	maxConns int64 // 0: unlimited; set by NewPool

	// The state is shared with the backend's successors in the pools that
	// replace this one on reloads: one pointer, so a successor costs the
	// request path nothing but the load of it.
	*state
}

// state is what a backend learns while it serves and a reload keeps.
type state struct {
	inflight atomic.Int64
	// gate holds the reasons the backend is out (gateDown, gateEjected) in
	// one word, so that Usable is one load. Zero: usable, so a new backend
	// takes traffic at once.
	gate atomic.Uint32

	// Passive outlier detection (outlier.go).
	fails        atomic.Int32 // consecutive failed requests
	ejectedUntil atomic.Int64 // monotonic ns; 0: not ejected
	ejections    atomic.Int64 // ejections since start, for the admin side
	ejected5xx   atomic.Int64 // those of them that 5xx responses tipped over
	streak       atomic.Int32 // ejections since the last success, for backoff

	rampUntil atomic.Int64 // slow start: monotonic ns at which the full share returns; 0: none

	// Peak-EWMA latency for the ewma policy (ewma.go).
	cost  atomic.Uint64 // float64 nanoseconds
	stamp atomic.Int64  // monotonic ns of the last observation

	check                atomic.Pointer[Check] // last active probe, written by health
	probesOK, probesFail atomic.Int64          // probes since start, by verdict
}

// NewBackend returns a usable backend. weight must be at least 1.
func NewBackend(u *url.URL, weight int) (*Backend, error) {
	if u == nil || u.Host == "" {
		return nil, errors.New("balancer: backend needs a URL with a host")
	}
	if weight < 1 {
		return nil, fmt.Errorf("balancer: backend %s: weight must be at least 1, got %d", u.Host, weight)
	}
	return &Backend{url: u, weight: weight, state: &state{}}, nil
}

// Successor returns the same server for a pool that replaces b's on a
// reload, at weight, sharing b's state: in-flight requests, the active
// checks' verdict and last probe, ejection and its backoff, slow start and
// latency. A reload thus neither forgets an outage nor restarts a ramp, and
// requests that finish on the old pool are counted off the new one's
// backend. NewPool places it like a new backend.
func (b *Backend) Successor(weight int) (*Backend, error) {
	s, err := NewBackend(b.url, weight)
	if err != nil {
		return nil, err
	}
	s.state = b.state
	return s, nil
}

// URL is the backend's scheme and host. Callers must not modify it.
func (b *Backend) URL() *url.URL { return b.url }

// Index is the backend's position in its pool, from 0: callers keep
// per-backend data in slices indexed by it instead of looking backends up.
func (b *Backend) Index() int { return b.index }

// Weight is the backend's configured share of traffic.
func (b *Backend) Weight() int { return b.weight }

// Usable reports whether the backend may be picked: active checks have not
// marked it down and passive detection has not ejected it. An ejection that
// has run its time ends here, on first look.
func (b *Backend) Usable() bool {
	// Kept small enough to inline: every pick calls it for each candidate.
	return b.gate.Load() == 0 || b.usableAfterAll()
}

// usableAfterAll is Usable's rare case: a backend that is out may be only
// ejected, and its ejection over. Not inlined, so that Usable is.
//
//go:noinline
func (b *Backend) usableAfterAll() bool {
	return b.gate.Load() == gateEjected && b.ejectionOver()
}

const (
	gateDown    = 1 << iota // active checks failed
	gateEjected             // passive detection ejected it
)

// SetUsable records the active checks' verdict and reports whether it
// changed. A backend that comes back ramps up over the pool's slow start.
func (b *Backend) SetUsable(usable bool) (changed bool) {
	if !usable {
		if changed = b.gate.Or(gateDown)&gateDown == 0; changed {
			b.transition("up", "down", b.checkDetail())
		}
		return changed
	}
	return b.up(b.checkDetail())
}

// up clears the active checks' verdict, for reason, and reports whether
// the backend was down.
func (b *Backend) up(reason string) (changed bool) {
	if changed = b.gate.And(^uint32(gateDown))&gateDown != 0; changed {
		b.startRamp()
		b.transition("down", "up", reason)
	}
	return changed
}

// Unchecked records that the backend's pool has no active checks any more
// (a reload removed them): their last probe and verdict no longer stand,
// so a backend they had taken down comes back, as after a restart.
func (b *Backend) Unchecked() {
	b.check.Store(nil)
	b.up("active checks removed")
}

// checkDetail is the last probe's detail: the reason for the active
// checks' verdict, which health records before it sets the verdict.
func (b *Backend) checkDetail() string {
	if c := b.check.Load(); c != nil {
		return c.Detail
	}
	return ""
}

// Healthy reports the active checks' verdict; true without checks.
func (b *Backend) Healthy() bool { return b.gate.Load()&gateDown == 0 }

// InFlight is the number of requests the backend is serving now.
func (b *Backend) InFlight() int64 { return b.inflight.Load() }

// Release ends a request counted by Pool.Acquire.
func (b *Backend) Release() {
	b.inflight.Add(-1)
	if b.maxConns > 0 {
		b.pool.waiters.freed()
	}
}

// Tried is the set of a pool's backends a request has already been sent to,
// so that a retry goes elsewhere. It is a value, so picking allocates nothing.
// Pools larger than 64 backends share bits (index mod 64): a retry may then
// also pass over an untried backend, which is harmless.
type Tried uint64

// Add returns the set with b added.
func (t Tried) Add(b *Backend) Tried { return t | 1<<(b.index%64) }

// Has reports whether b is in the set.
func (t Tried) Has(b *Backend) bool { return t&(1<<(b.index%64)) != 0 }

// Filter says which backends a pick may return.
type Filter struct {
	Tried Tried
	// AnyHealth admits unusable backends too: panic mode.
	AnyHealth bool
}

// Allows reports whether b may take the request: not tried yet, usable
// (unless in panic) and below max_conns.
func (f Filter) Allows(b *Backend) bool {
	return !f.Tried.Has(b) && (f.AnyHealth || b.Usable()) && !b.full()
}

func (b *Backend) full() bool { return b.maxConns > 0 && b.inflight.Load() >= b.maxConns }

// Policy picks a backend that f allows among a pool's backends; nil means
// none. Implementations must be safe for concurrent use and should not
// allocate.
type Policy interface {
	Pick(backends []*Backend, f Filter) *Backend
}

// Pool is a named, fixed set of backends with the policy that picks among them.
type Pool struct {
	name     string
	backends []*Backend
	policy   Policy
	opts     Options
	log      *slog.Logger

	ejectMu sync.Mutex // serialises ejections, so that two cannot both pass the max_ejected_percent check

	// Shared with the pools that replace this one (Next): the backends'
	// transitions, and the max_conns queue, since their backends share
	// in-flight counts with this one's and a request finishing on either
	// frees a slot for requests queued in both.
	history *transitions // recent state changes of the backends, for the admin side
	waiters *queue
}

// queue is where requests wait for a backend below max_conns.
type queue struct {
	waiting atomic.Int32  // requests queued
	wake    chan struct{} // a slot may have freed up
}

// Policy names accepted by NewPool.
const (
	RoundRobin = "round_robin"
	LeastConn  = "least_conn"
	EWMA       = "ewma"
)

// Options configure a pool beyond its backends. The zero value is a round
// robin pool without limits, slow start or passive detection.
type Options struct {
	Policy string // RoundRobin when empty

	// MaxConns caps each backend's in-flight requests (0: no cap). When all
	// are full, Acquire waits up to QueueTimeout for a free slot.
	MaxConns     int
	QueueTimeout time.Duration

	// PanicMode sends traffic to every backend when none is usable.
	PanicMode bool

	// SlowStart is how long a backend that comes back takes to reach its
	// full share of traffic (0: at once).
	SlowStart time.Duration

	// Decay is the ewma policy's latency time constant (0: DefaultDecay).
	Decay time.Duration

	Passive Passive

	// Recovery is the soonest an actively checked backend can come back
	// (rise × interval), for Retry-After; 0 without active checks.
	Recovery time.Duration

	Log *slog.Logger // ejections and readmissions; nil: discarded
}

// Passive configures outlier detection from real traffic.
type Passive struct {
	MaxFails          int           // consecutive failures that eject; 0: off
	FailTimeout       time.Duration // first ejection; each further one doubles
	MaxFailTimeout    time.Duration // cap of the doubling (0: FailTimeout)
	MaxEjectedPercent int           // at most this share of the pool unusable through ejection
	FailOn5xx         bool          // 5xx responses count as failures
}

// DefaultDecay is the ewma policy's latency time constant unless set.
const DefaultDecay = 10 * time.Second

// NewPool builds a pool. The backends must not belong to another pool.
func NewPool(name string, backends []*Backend, o Options) (*Pool, error) {
	return newPool(name, backends, o, &transitions{}, &queue{wake: make(chan struct{}, 1)})
}

// Next builds the pool that replaces p on a reload: the same name, with
// backends that are new or successors of p's (Backend.Successor) and the
// options now configured. Requests still running on p and those on the new
// pool share one max_conns queue, and the backends' recent transitions
// carry over.
func (p *Pool) Next(backends []*Backend, o Options) (*Pool, error) {
	return newPool(p.name, backends, o, p.history, p.waiters)
}

func newPool(name string, backends []*Backend, o Options, h *transitions, q *queue) (*Pool, error) {
	if len(backends) == 0 {
		return nil, fmt.Errorf("balancer: pool %q has no backends", name)
	}
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("balancer: pool %q: %w", name, err)
	}
	if o.Policy == "" {
		o.Policy = RoundRobin
	}
	if o.Decay == 0 {
		o.Decay = DefaultDecay
	}
	if o.Passive.MaxFailTimeout < o.Passive.FailTimeout {
		o.Passive.MaxFailTimeout = o.Passive.FailTimeout
	}
	p := &Pool{name: name, backends: backends, opts: o, log: o.Log, history: h, waiters: q}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	for i, b := range backends {
		b.index, b.pool, b.maxConns = i, p, int64(o.MaxConns)
	}
	switch o.Policy {
	case RoundRobin:
		p.policy = newRoundRobin(backends)
	case LeastConn:
		p.policy = &leastConn{}
	case EWMA:
		p.policy = ewma{}
	default:
		return nil, fmt.Errorf("balancer: pool %q: unknown policy %q", name, o.Policy)
	}
	return p, nil
}

func (o *Options) validate() error {
	switch {
	case o.MaxConns < 0:
		return fmt.Errorf("max conns must not be negative, got %d", o.MaxConns)
	case o.QueueTimeout < 0, o.SlowStart < 0, o.Decay < 0, o.Recovery < 0:
		return errors.New("durations must not be negative")
	case o.Passive.MaxFails < 0:
		return fmt.Errorf("max fails must not be negative, got %d", o.Passive.MaxFails)
	case o.Passive.MaxFails > 0 && o.Passive.FailTimeout <= 0:
		return errors.New("passive detection needs a fail timeout above zero")
	case o.Passive.MaxEjectedPercent < 0 || o.Passive.MaxEjectedPercent > 100:
		return fmt.Errorf("max ejected percent must be 0 to 100, got %d", o.Passive.MaxEjectedPercent)
	}
	return nil
}

// Name is the pool's name from the configuration.
func (p *Pool) Name() string { return p.name }

// Backends lists the pool's backends. Callers must not modify the slice.
func (p *Pool) Backends() []*Backend { return p.backends }

// Pick returns a backend that is usable, untried and below max_conns, or nil
// when there is none. In panic mode, when no backend at all is usable, it
// picks among all of them instead.
func (p *Pool) Pick(tried Tried) *Backend {
	if b := p.policy.Pick(p.backends, Filter{Tried: tried}); b != nil {
		return b
	}
	if p.opts.PanicMode && !p.anyUsable() {
		return p.policy.Pick(p.backends, Filter{Tried: tried, AnyHealth: true})
	}
	return nil
}

func (p *Pool) anyUsable() bool {
	for _, b := range p.backends {
		if b.Usable() {
			return true
		}
	}
	return false
}
