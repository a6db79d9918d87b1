package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Route is one route's series, resolved when a snapshot is built and kept
// in the route's struct. A nil *Route records nothing (metrics off).
type Route struct {
	name string
	m    *Metrics
	// requests holds a counter per method and status class, resolved on the
	// first request of each pair, so that /metrics lists only the pairs seen
	// and no request after the first looks a label set up.
	requests [len(methods)][len(classes)]atomic.Pointer[prometheus.Counter]
	duration prometheus.Observer
	bytes    prometheus.Counter
	win      *window
}

// Route returns the series of the route called name. Asked again for the
// same name (a reload), it returns the same handle, so that the route's
// history on the dashboard goes on. Nil Metrics give a nil Route.
func (m *Metrics) Route(name string) *Route {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.routes[name]; r != nil {
		return r
	}
	r := &Route{
		name:     name,
		m:        m,
		duration: m.duration.WithLabelValues(name),
		bytes:    m.bytesOut.WithLabelValues(name),
		win:      newWindow(),
	}
	m.routes[name] = r
	return r
}

// Observe records one finished request: its method, the status sent (499
// when the client left), how long it took and the body bytes sent.
func (r *Route) Observe(method string, status int, d time.Duration, bytesOut int64) {
	if r == nil {
		return
	}
	mi, ci := methodIndex(method), classIndex(status)
	c := r.requests[mi][ci].Load()
	if c == nil {
		c = r.resolve(mi, ci)
	}
	(*c).Inc()
	r.duration.Observe(d.Seconds())
	if bytesOut > 0 {
		r.bytes.Add(float64(bytesOut))
	}
	r.win.observe(d, ci == 4)
}

func (r *Route) resolve(mi, ci int) *prometheus.Counter {
	c := r.m.requests.WithLabelValues(r.name, methods[mi], classes[ci])
	r.requests[mi][ci].Store(&c)
	return &c
}

// methodIndex maps a method to its label; any other method, however
// spelled, is "other", so that clients cannot add series.
func methodIndex(m string) int {
	switch m {
	case "GET":
		return 0
	case "HEAD":
		return 1
	case "POST":
		return 2
	case "PUT":
		return 3
	case "PATCH":
		return 4
	case "DELETE":
		return 5
	case "OPTIONS":
		return 6
	}
	return 7
}

// classIndex maps a status to its class, 1xx to 5xx.
func classIndex(status int) int {
	return min(max(status/100, 1), 5) - 1
}
