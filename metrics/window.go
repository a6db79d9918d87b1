package metrics

import (
	"context"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// The dashboard charts each route's request rate, error rate and latency
// percentiles second by second. Prometheus histograms are too coarse for
// percentiles and cumulative, so each route also counts its requests in a
// log-linear latency histogram of its own (one atomic addition per request);
// once a second a ticker takes the difference since the last tick and keeps
// the second's figures in a ring. Nothing but the ticker reads or resets it.

// Latency buckets: microseconds 0 to 15 exactly, then 8 buckets per
// doubling (at most 6% from a bucket's middle), up to 2^40 µs (12 days).
const (
	exactBuckets = 16
	subBuckets   = 8
	maxExp       = 40
	numBuckets   = exactBuckets + (maxExp-4)*subBuckets
)

func bucketOf(d time.Duration) int {
	us := uint64(max(d, 0) / time.Microsecond)
	if us < exactBuckets {
		return int(us)
	}
	e := bits.Len64(us) // at least 5
	if e > maxExp {
		return numBuckets - 1
	}
	sub := int(us>>(e-4)) & (subBuckets - 1)
	return exactBuckets + (e-5)*subBuckets + sub
}

// bucketMiddle is a bucket's middle value in milliseconds.
func bucketMiddle(i int) float64 {
	if i < exactBuckets {
		return (float64(i) + 0.5) / 1000
	}
	e, sub := (i-exactBuckets)/subBuckets+5, (i-exactBuckets)%subBuckets
	lo := float64(uint64(subBuckets+sub) << (e - 4))
	hi := float64(uint64(subBuckets+sub+1) << (e - 4))
	return (lo + hi) / 2 / 1000
}

// HistorySeconds is how far back the dashboard's charts reach.
const HistorySeconds = 300

// summaryEvery is the length of the block a route's summary covers.
const summaryEvery = 10

// Point is one second of one route: requests, 5xx answers and latency
// percentiles in milliseconds (zero when there were no requests).
type Point struct {
	Time     int64   `json:"t"` // Unix seconds
	Requests uint32  `json:"requests"`
	Errors   uint32  `json:"errors"`
	P50      float32 `json:"p50_ms"`
	P95      float32 `json:"p95_ms"`
	P99      float32 `json:"p99_ms"`
}

// Summary is a route's traffic over the last complete block of
// summaryEvery seconds.
type Summary struct {
	Seconds int     `json:"seconds"`
	Rate    float64 `json:"rate"`        // requests per second
	Errors  float64 `json:"error_ratio"` // share of 5xx answers, 0 to 1
	P50     float64 `json:"p50_ms"`
	P95     float64 `json:"p95_ms"`
	P99     float64 `json:"p99_ms"`
}

type window struct {
	// Written per request.
	buckets [numBuckets]atomic.Uint64 // cumulative counts
	errors  atomic.Uint64

	// The ticker's own: the cumulative counts at the last tick, and the
	// counts of the summary block under way.
	last, block       [numBuckets]uint64
	lastErr, blockErr uint64
	ticks             int

	// Shared with readers.

	mu      sync.Mutex
	ring    [HistorySeconds]Point
	n       int // points ever added
	summary Summary
}

func newWindow() *window { return &window{} }

func (w *window) observe(d time.Duration, serverError bool) {
	w.buckets[bucketOf(d)].Add(1)
	if serverError {
		w.errors.Add(1)
	}
}

// tick closes the second that ends at now: it adds the second's point, and
// adds its counts to into (the overview of all routes) when into is set.
func (w *window) tick(now int64, into *[numBuckets]uint64, intoErr *uint64) {
	var delta [numBuckets]uint64
	for i := range delta {
		c := w.buckets[i].Load()
		delta[i] = c - w.last[i]
		w.last[i] = c
		if into != nil {
			into[i] += delta[i]
		}
	}
	e := w.errors.Load()
	errs := e - w.lastErr
	w.lastErr = e
	if intoErr != nil {
		*intoErr += errs
	}
	w.add(now, &delta, errs)
}

// add records one second's counts, and every summaryEvery seconds the
// summary of the block they close.
func (w *window) add(now int64, delta *[numBuckets]uint64, errs uint64) {
	p := pointOf(now, delta, errs)
	for i, c := range delta {
		w.block[i] += c
	}
	w.blockErr += errs
	w.ticks++
	var s *Summary
	if w.ticks%summaryEvery == 0 {
		s = summaryOf(&w.block, w.blockErr)
		w.block, w.blockErr = [numBuckets]uint64{}, 0
	}
	w.mu.Lock()
	w.ring[w.n%HistorySeconds] = p
	w.n++
	if s != nil {
		w.summary = *s
	}
	w.mu.Unlock()
}

func summaryOf(counts *[numBuckets]uint64, errs uint64) *Summary {
	var total uint64
	for _, c := range counts {
		total += c
	}
	q := quantiles(counts, total)
	s := &Summary{Seconds: summaryEvery, Rate: float64(total) / summaryEvery, P50: q[0], P95: q[1], P99: q[2]}
	if total > 0 {
		s.Errors = float64(errs) / float64(total)
	}
	return s
}

func pointOf(now int64, delta *[numBuckets]uint64, errs uint64) Point {
	var total uint64
	for _, c := range delta {
		total += c
	}
	q := quantiles(delta, total)
	return Point{Time: now, Requests: uint32(total), Errors: uint32(errs),
		P50: float32(q[0]), P95: float32(q[1]), P99: float32(q[2])}
}

// quantiles returns p50, p95 and p99 of the counts, in milliseconds.
func quantiles(counts *[numBuckets]uint64, total uint64) [3]float64 {
	var out [3]float64
	if total == 0 {
		return out
	}
	qs := [3]float64{0.5, 0.95, 0.99}
	var cum uint64
	j := 0
	for i, c := range counts {
		cum += c
		for j < len(qs) && float64(cum) >= qs[j]*float64(total) {
			out[j] = bucketMiddle(i)
			j++
		}
		if j == len(qs) {
			break
		}
	}
	return out
}

func (w *window) points() []Point {
	w.mu.Lock()
	defer w.mu.Unlock()
	start := max(0, w.n-HistorySeconds)
	out := make([]Point, 0, w.n-start)
	for i := start; i < w.n; i++ {
		out = append(out, w.ring[i%HistorySeconds])
	}
	return out
}

func (w *window) lastSummary() Summary {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.summary
}

// Run closes each second of every route's history until ctx ends. One
// goroutine per process; nothing on the request path waits for it.
func (m *Metrics) Run(ctx context.Context) {
	if m == nil {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m.tick(now.Unix())
		}
	}
}

func (m *Metrics) tick(now int64) {
	var all [numBuckets]uint64
	var allErr uint64
	m.mu.Lock()
	routes := make([]*Route, 0, len(m.routes))
	for _, r := range m.routes {
		routes = append(routes, r)
	}
	m.mu.Unlock()
	for _, r := range routes {
		r.win.tick(now, &all, &allErr)
	}
	m.all.add(now, &all, allErr)
}

// History returns the last HistorySeconds seconds of a route, oldest first;
// "" gives every request, routed or not. An unknown route has none.
func (m *Metrics) History(route string) []Point {
	if route == "" {
		return m.all.points()
	}
	m.mu.Lock()
	r := m.routes[route]
	m.mu.Unlock()
	if r == nil {
		return nil
	}
	return r.win.points()
}

// Summaries returns each route's summary by name, and the overview under "".
func (m *Metrics) Summaries() map[string]Summary {
	m.mu.Lock()
	wins := make(map[string]*window, len(m.routes)+1)
	for name, r := range m.routes {
		wins[name] = r.win
	}
	m.mu.Unlock()
	wins[""] = m.all
	out := make(map[string]Summary, len(wins))
	for name, w := range wins {
		out[name] = w.lastSummary()
	}
	return out
}
