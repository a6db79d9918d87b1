// Package admin owns the operator-facing listener: liveness, a JSON view
// of pools and backends read from balancer state, and the configuration
// in force with a way to reload it (config.go). Metrics and the dashboard
// will live here too. It reads backend state and never changes it.
package admin

import (
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/portico/portico/balancer"
)

// PoolsFunc returns the pools in service now; it is called per request, so
// the admin side always shows the current snapshot.
type PoolsFunc func() []*balancer.Pool

// Handler serves /healthz, /api/pools, /debug/pprof/ and, when cfg is not
// nil, /api/config and /api/reload.
func Handler(pools PoolsFunc, cfg *ConfigAPI) http.Handler {
	mux := http.NewServeMux()
	if cfg != nil {
		configRoutes(mux, cfg)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /api/pools", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, poolViews(pools()))
	})
	// Profiles, for finding what the request path spends its time on. The
	// admin listener is loopback-only by default.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("Portico admin\n  /healthz    liveness\n  /api/pools  pools and backends: health, ejections, load (JSON)\n" +
			"  /api/config  the configuration in force (JSON)\n  POST /api/reload  reload the configuration file\n  /debug/pprof/  Go profiles\n"))
	})
	return mux
}

// PoolView is the JSON form of a pool.
type PoolView struct {
	Name      string        `json:"name"`
	Policy    string        `json:"balance"`
	PanicMode bool          `json:"panic_mode"`
	Usable    int           `json:"usable_backends"`
	Backends  []BackendView `json:"backends"`
}

// BackendView is the JSON form of a backend's state.
type BackendView struct {
	URL       string     `json:"url"`
	Weight    int        `json:"weight"`
	Usable    bool       `json:"usable"`
	Healthy   bool       `json:"healthy"` // active checks' verdict
	Ejected   bool       `json:"ejected"` // passive detection
	EjectedMs int64      `json:"ejected_for_ms,omitempty"`
	Ejections int64      `json:"ejections"`
	Fails     int        `json:"consecutive_failures"` // of requests
	InFlight  int64      `json:"in_flight"`
	MaxConns  int64      `json:"max_conns,omitempty"`
	Share     float64    `json:"slow_start_share"`
	LatencyMs float64    `json:"ewma_latency_ms,omitempty"`
	LastCheck *CheckView `json:"last_check,omitempty"`
}

// CheckView is the JSON form of the last active probe.
type CheckView struct {
	Time   time.Time `json:"time"`
	OK     bool      `json:"ok"`
	Detail string    `json:"detail"`
	Passes int       `json:"consecutive_passes"`
	Fails  int       `json:"consecutive_failures"`
}

func poolViews(pools []*balancer.Pool) []PoolView {
	views := make([]PoolView, 0, len(pools))
	for _, p := range pools {
		ps := p.State()
		v := PoolView{Name: ps.Name, Policy: ps.Policy, PanicMode: ps.PanicMode, Usable: ps.Usable}
		for _, b := range ps.Backends {
			bv := BackendView{
				URL: b.URL, Weight: b.Weight, Usable: b.Usable, Healthy: b.Healthy, Ejected: b.Ejected,
				EjectedMs: b.EjectedFor.Milliseconds(), Ejections: b.Ejections, Fails: b.Fails,
				InFlight: b.InFlight, MaxConns: b.MaxConns, Share: b.Share,
				LatencyMs: float64(b.Latency.Microseconds()) / 1000,
			}
			if c := b.LastCheck; c != nil {
				bv.LastCheck = &CheckView{Time: c.Time, OK: c.OK, Detail: c.Detail, Passes: c.Passes, Fails: c.Fails}
			}
			v.Backends = append(v.Backends, bv)
		}
		views = append(views, v)
	}
	return views
}
