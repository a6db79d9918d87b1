package balancer

import (
	"math/rand/v2"
	"sync/atomic"
)

// roundRobin is smooth weighted round robin (nginx's algorithm) made
// lock-free: the interleaved order it produces is computed once, and each
// pick takes the next slot with one atomic add. Weights 3:1 give A B A A.
type roundRobin struct {
	next     atomic.Uint64
	schedule []uint32 // backend indexes, one cycle of the smooth order
}

func newRoundRobin(backends []*Backend) *roundRobin {
	g := 0
	for _, b := range backends {
		g = gcd(g, b.weight)
	}
	total := 0
	for _, b := range backends {
		total += b.weight / g
	}
	current := make([]int, len(backends))
	schedule := make([]uint32, 0, total)
	for range total {
		best := 0
		for i, b := range backends {
			current[i] += b.weight / g
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		schedule = append(schedule, uint32(best))
	}
	return &roundRobin{schedule: schedule}
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Pick takes the next slot; if its backend is not allowed it walks on, so an
// unusable backend's share goes to the ones after it in the schedule. A
// backend in slow start keeps its slot only with the probability of its
// current share, and is taken anyway when nothing else is allowed.
func (r *roundRobin) Pick(backends []*Backend, f Filter) *Backend {
	n := uint64(len(r.schedule))
	start := r.next.Add(1) - 1
	var ramping *Backend
	for k := range n {
		b := backends[r.schedule[(start+k)%n]]
		if !f.Allows(b) {
			continue
		}
		if s := b.share(); s >= 1 || rand.Float64() < s {
			return b
		}
		if ramping == nil {
			ramping = b
		}
	}
	return ramping
}

// leastConn picks the backend with the fewest in-flight requests per unit of
// (slow-start scaled) weight, counting the request being placed as HAProxy
// does, so that a backend coming back with no connections does not draw
// every request at once. The scan starts one place further each time, so
// ties rotate.
type leastConn struct {
	next atomic.Uint64
}

func (l *leastConn) Pick(backends []*Backend, f Filter) *Backend {
	n := uint64(len(backends))
	start := l.next.Add(1) - 1
	var best *Backend
	var bestLoad float64
	for k := range n {
		b := backends[(start+k)%n]
		if !f.Allows(b) {
			continue
		}
		load := float64(b.InFlight()+1) / (float64(b.weight) * b.share())
		if best == nil || load < bestLoad {
			best, bestLoad = b, load
		}
	}
	return best
}
