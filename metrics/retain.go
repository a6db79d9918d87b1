package metrics

import "github.com/prometheus/client_golang/prometheus"

// Kept names what a configuration in force has: series of anything else
// are dropped by Retain.
type Kept struct {
	Routes      []string
	Pools       map[string][]string // pool → its backends as host:port
	Middlewares []string
}

// Retain drops the series of routes, pools, backends and middlewares that a
// reload removed, so that a configuration renamed again and again does not
// grow /metrics without bound. Requests still finishing on the replaced
// snapshot record into handles that are no longer exported, which loses at
// most their last few counts.
func (m *Metrics) Retain(k Kept) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	routes := set(k.Routes)
	for name := range m.routes {
		if !routes[name] && name != Unrouted {
			delete(m.routes, name)
			for _, v := range []deleter{m.requests, m.duration, m.bytesOut} {
				v.DeletePartialMatch(prometheus.Labels{"route": name})
			}
		}
	}
	for pool, backends := range m.seenPools {
		kept, ok := k.Pools[pool]
		if !ok {
			delete(m.seenPools, pool)
			for _, v := range []deleter{m.backendReqs, m.ttfb, m.retries} {
				v.DeletePartialMatch(prometheus.Labels{"pool": pool})
			}
			continue
		}
		keep := set(kept)
		for b := range backends {
			if !keep[b] {
				delete(backends, b)
				for _, v := range []deleter{m.backendReqs, m.ttfb} {
					v.DeletePartialMatch(prometheus.Labels{"pool": pool, "backend": b})
				}
			}
		}
	}
	mws := set(k.Middlewares)
	for name := range m.seenMWs {
		if !mws[name] {
			delete(m.seenMWs, name)
			for _, v := range []deleter{m.rejections, m.fallbacks} {
				v.DeletePartialMatch(prometheus.Labels{"middleware": name})
			}
		}
	}
}

// deleter is what every labelled vector offers.
type deleter interface {
	DeletePartialMatch(prometheus.Labels) int
}

func (m *Metrics) sawPool(name string, backends []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := m.seenPools[name]
	if seen == nil {
		seen = map[string]bool{}
		m.seenPools[name] = seen
	}
	for _, b := range backends {
		seen[b] = true
	}
}

func (m *Metrics) sawMiddleware(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seenMWs[name] = true
}

func set(names []string) map[string]bool {
	s := make(map[string]bool, len(names))
	for _, n := range names {
		s[n] = true
	}
	return s
}
