package balancer

import (
	"strconv"
	"time"
)

// epoch anchors mono: atomics hold int64 nanoseconds, and the monotonic
// clock keeps ejections and ramps immune to wall-clock jumps.
var epoch = time.Now()

func mono() int64 { return int64(time.Since(epoch)) }

// Result is how one attempt on a backend ended, as the proxy saw it.
type Result uint8

const (
	Success     Result = iota // a response below 500
	ServerError               // a 5xx response: a failure only with Passive.FailOn5xx
	Failure                   // no response: connection refused or reset, timeout
)

// Report records the outcome of an attempt that took rtt: it feeds the ewma
// latency and passive outlier detection. Attempts the client abandoned say
// nothing about the backend and should not be reported.
func (b *Backend) Report(r Result, rtt time.Duration) {
	o := &b.pool.opts
	failed := r == Failure || (r == ServerError && o.Passive.FailOn5xx)
	if o.Policy == EWMA {
		if failed {
			rtt = max(rtt, failurePenalty)
		}
		b.observe(rtt)
	}
	if !failed {
		// Load before Store: in the common case nothing is written, so the
		// cache line stays shared between the cores serving this backend.
		if b.fails.Load() != 0 {
			b.fails.Store(0)
		}
		if b.streak.Load() != 0 && b.ejectedUntil.Load() == 0 {
			b.streak.Store(0)
		}
		return
	}
	if n := b.fails.Add(1); o.Passive.MaxFails > 0 && int(n) >= o.Passive.MaxFails && b.ejectedUntil.Load() == 0 {
		b.pool.eject(b, int(n), r == ServerError)
	}
}

// eject takes b out of service for FailTimeout, doubled for each ejection
// since its last success up to MaxFailTimeout, unless that would leave more
// than MaxEjectedPercent of the pool unusable. by5xx says whether the
// failure that tipped it over was a 5xx response rather than an error.
func (p *Pool) eject(b *Backend, fails int, by5xx bool) {
	p.ejectMu.Lock()
	defer p.ejectMu.Unlock()
	if b.ejectedUntil.Load() != 0 {
		return
	}
	unusable := 0
	for _, o := range p.backends {
		if o != b && !o.Usable() {
			unusable++
		}
	}
	if (unusable+1)*100 > p.opts.Passive.MaxEjectedPercent*len(p.backends) {
		p.log.Debug("backend not ejected: max_ejected_percent reached", "pool", p.name, "backend", b.url.Host,
			"consecutive_failures", fails, "unusable", unusable)
		return
	}
	d, limit := p.opts.Passive.FailTimeout, p.opts.Passive.MaxFailTimeout
	for streak := b.streak.Add(1); streak > 1 && d < limit; streak-- {
		d *= 2
	}
	d = min(d, limit)
	b.ejectedUntil.Store(mono() + int64(d))
	b.gate.Or(gateEjected)
	b.ejections.Add(1)
	if by5xx {
		b.ejected5xx.Add(1)
	}
	b.fails.Store(0)
	b.transition("usable", "ejected", strconv.Itoa(fails)+" consecutive failures")
	p.log.Warn("backend ejected", "pool", p.name, "backend", b.url.Host, "old", "usable", "new", "ejected",
		"reason", "consecutive failures", "consecutive_failures", fails, "for", d.String())
}

// ejectionOver ends the backend's ejection if its time has come, and
// reports whether it is over.
func (b *Backend) ejectionOver() bool {
	until := b.ejectedUntil.Load()
	if until == 0 {
		return true
	}
	if mono() < until {
		return false
	}
	if b.ejectedUntil.CompareAndSwap(until, 0) {
		b.readmitted("fail_timeout elapsed")
	}
	return true
}

// readmitted finishes ending an ejection whose deadline this caller cleared.
func (b *Backend) readmitted(reason string) {
	b.gate.And(^uint32(gateEjected))
	if b.ejectedUntil.Load() != 0 {
		// Ejected again between the clearing and now: keep it out.
		b.gate.Or(gateEjected)
	}
	b.startRamp()
	b.transition("ejected", "usable", reason)
	b.pool.log.Info("backend readmitted", "pool", b.pool.name, "backend", b.url.Host,
		"old", "ejected", "new", "usable", "reason", reason)
}

// Readmit ends an ejection early, when active checks vouch for the backend,
// and reports whether there was one.
func (b *Backend) Readmit(reason string) bool {
	until := b.ejectedUntil.Load()
	if until == 0 || !b.ejectedUntil.CompareAndSwap(until, 0) {
		return false
	}
	b.readmitted(reason)
	return true
}

// Ejected reports whether passive detection has the backend out of service.
func (b *Backend) Ejected() bool {
	until := b.ejectedUntil.Load()
	return until != 0 && mono() < until
}

func (b *Backend) startRamp() {
	if b.pool == nil { // not in a pool yet: nothing to ramp up in
		return
	}
	if s := b.pool.opts.SlowStart; s > 0 {
		b.rampUntil.Store(mono() + int64(s))
	}
}

// minShare is where slow start begins, so that a returning backend gets
// some traffic at once (and ewma can measure it).
const minShare = 0.1

// share is the fraction of its weight the backend takes now: below 1 while
// slow start ramps it up linearly.
func (b *Backend) share() float64 {
	if b.rampUntil.Load() == 0 {
		return 1
	}
	return b.ramp()
}

func (b *Backend) ramp() float64 {
	until := b.rampUntil.Load()
	left := until - mono()
	if left <= 0 {
		b.rampUntil.CompareAndSwap(until, 0)
		return 1
	}
	return max(minShare, 1-float64(left)/float64(b.pool.opts.SlowStart))
}

// RetryAfter estimates when the pool may have a usable backend again, for a
// 503's Retry-After: the earliest end of an ejection, or the soonest an
// actively checked backend can pass its checks; never under a second.
func (p *Pool) RetryAfter() time.Duration {
	soonest := p.opts.Recovery
	now := mono()
	for _, b := range p.backends {
		if until := b.ejectedUntil.Load(); until != 0 && b.Healthy() {
			if left := time.Duration(until - now); soonest == 0 || left < soonest {
				soonest = left
			}
		}
	}
	return max(soonest, time.Second)
}
