package balancer

import "time"

// Check is the outcome of one active probe, recorded by the health checker.
type Check struct {
	Time   time.Time
	OK     bool
	Detail string // "status 200", "timeout after 2s", "connection refused", ...
	Passes int    // consecutive passes, this one included
	Fails  int    // consecutive failures, this one included
}

// RecordCheck stores the latest probe outcome for State and counts it.
func (b *Backend) RecordCheck(c Check) {
	b.check.Store(&c)
	if c.OK {
		b.probesOK.Add(1)
	} else {
		b.probesFail.Add(1)
	}
}

// BackendState is a consistent-enough copy of a backend's state for display:
// each field is read atomically, not all of them at one instant.
type BackendState struct {
	URL        string
	Weight     int
	Usable     bool
	Healthy    bool          // active checks' verdict (true without checks)
	Ejected    bool          // out through passive detection
	EjectedFor time.Duration // time left of the ejection
	Ejections  int64         // since start
	Ejected5xx int64         // ejections that 5xx responses tipped over; the rest were errors
	Fails      int           // consecutive failed requests
	InFlight   int64
	MaxConns   int64         // 0: unlimited
	Share      float64       // of its weight, below 1 during slow start
	Latency    time.Duration // peak-EWMA latency; ewma pools only
	LastCheck  *Check        // nil before the first probe or without checks
	ProbesOK   int64         // active probes passed since start
	ProbesFail int64         // active probes failed since start
}

// State returns the backend's state now.
func (b *Backend) State() BackendState {
	now := mono()
	s := BackendState{
		URL:        b.url.String(),
		Weight:     b.weight,
		Usable:     b.Usable(),
		Healthy:    b.Healthy(),
		Ejections:  b.ejections.Load(),
		Ejected5xx: b.ejected5xx.Load(),
		ProbesOK:   b.probesOK.Load(),
		ProbesFail: b.probesFail.Load(),
		Fails:      int(b.fails.Load()),
		InFlight:   b.InFlight(),
		MaxConns:   b.maxConns,
		Share:      1,
		LastCheck:  b.check.Load(),
	}
	if b.pool != nil {
		s.Share = b.share()
		if b.pool.opts.Policy == EWMA {
			s.Latency = time.Duration(b.latency(now))
		}
	}
	if until := b.ejectedUntil.Load(); until > now {
		s.Ejected, s.EjectedFor = true, time.Duration(until-now)
	}
	return s
}

// PoolState is a pool's state for display.
type PoolState struct {
	Name      string
	Policy    string
	PanicMode bool
	Usable    int // backends usable now
	Backends  []BackendState
	// Transitions are the latest state changes of the pool's backends,
	// oldest first.
	Transitions []Transition
}

// State returns the pool's state now.
func (p *Pool) State() PoolState {
	s := PoolState{
		Name: p.name, Policy: p.opts.Policy, PanicMode: p.opts.PanicMode,
		Backends: make([]BackendState, len(p.backends)), Transitions: p.history.list(),
	}
	for i, b := range p.backends {
		s.Backends[i] = b.State()
		if s.Backends[i].Usable {
			s.Usable++
		}
	}
	return s
}
