package balancer

import "sync/atomic"

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

// Pick takes the next slot; if its backend is not eligible it walks on, so an
// unusable backend's share goes to the ones after it in the schedule.
func (r *roundRobin) Pick(backends []*Backend, tried Tried) *Backend {
	n := uint64(len(r.schedule))
	start := r.next.Add(1) - 1
	for k := range n {
		b := backends[r.schedule[(start+k)%n]]
		if eligible(b, tried) {
			return b
		}
	}
	return nil
}

// leastConn picks the backend with the fewest in-flight requests per unit of
// weight. The scan starts one place further each time, so ties rotate.
type leastConn struct {
	next atomic.Uint64
}

func (l *leastConn) Pick(backends []*Backend, tried Tried) *Backend {
	n := uint64(len(backends))
	start := l.next.Add(1) - 1
	var best *Backend
	var bestLoad int64
	for k := range n {
		b := backends[(start+k)%n]
		if !eligible(b, tried) {
			continue
		}
		// load/weight < bestLoad/best.weight, without division.
		load := b.InFlight()
		if best == nil || load*int64(best.weight) < bestLoad*int64(b.weight) {
			best, bestLoad = b, load
		}
	}
	return best
}
