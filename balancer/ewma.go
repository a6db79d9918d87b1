package balancer

import (
	"math"
	"math/rand/v2"
	"time"
)

// ewma is the power of two random choices over peak-EWMA latency, as in
// Finagle and Linkerd: of two backends drawn at random, the one with the
// lower latency × (in-flight + 1) wins. Drawing two keeps the choice cheap
// and avoids the herd that always taking the global best causes; the peak
// (a slower response replaces the average at once) makes a backend that
// turns slow lose its share immediately, while the decay slowly lets it be
// tried again.
type ewma struct{}

func (ewma) Pick(backends []*Backend, f Filter) *Backend {
	now := mono()
	if n := len(backends); n >= 2 {
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		a, b := backends[i], backends[j]
		if f.Allows(a) && f.Allows(b) {
			if b.score(now) < a.score(now) {
				return b
			}
			return a
		}
	}
	// Fewer than two of the drawn backends are allowed: compare all of them.
	// Pools are small, and this happens only while some are out.
	var best *Backend
	var bestScore float64
	for _, b := range backends {
		if !f.Allows(b) {
			continue
		}
		if s := b.score(now); best == nil || s < bestScore {
			best, bestScore = b, s
		}
	}
	return best
}

// score is the expected cost of one more request, per unit of weight. The
// nanosecond added to the latency lets in-flight counts decide between
// backends not yet measured.
func (b *Backend) score(now int64) float64 {
	return (b.latency(now) + 1) * float64(b.InFlight()+1) / (float64(b.weight) * b.share())
}

// latency is the peak-EWMA latency in nanoseconds, decayed to now.
func (b *Backend) latency(now int64) float64 {
	c := math.Float64frombits(b.cost.Load())
	if elapsed := now - b.stamp.Load(); elapsed > 0 && c > 0 {
		c *= math.Exp(-float64(elapsed) / float64(b.pool.opts.Decay))
	}
	return c
}

// observe folds one response time into the peak EWMA. The stamp's swap
// gives each concurrent observer its own slice of elapsed time, so the
// average decays by the right total amount without a lock.
func (b *Backend) observe(rtt time.Duration) {
	now := mono()
	elapsed := now - b.stamp.Swap(now)
	w := math.Exp(-float64(elapsed) / float64(b.pool.opts.Decay))
	x := float64(rtt)
	for {
		old := b.cost.Load()
		c := math.Float64frombits(old)
		next := x
		if x < c {
			next = c*w + x*(1-w)
		}
		if b.cost.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}

// failurePenalty is the latency a failed attempt counts as, so that a
// backend that fails fast does not look fast to ewma.
const failurePenalty = time.Second
