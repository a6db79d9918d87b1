// Package admin owns the operator-facing listener: liveness and a JSON view
// of pools and backends read from balancer state. Metrics and the dashboard
// will live here too. It reads backend state and never changes it.
package admin

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"

	"github.com/portico/portico/balancer"
)

// PoolsFunc returns the pools in service now; it is called per request, so
// the admin side always shows the current snapshot.
type PoolsFunc func() []*balancer.Pool

// Handler serves /healthz, /api/pools and /debug/pprof/.
func Handler(pools PoolsFunc) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /api/pools", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(poolViews(pools()))
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
		_, _ = w.Write([]byte("Portico admin\n  /healthz    liveness\n  /api/pools  pools and backends (JSON)\n  /debug/pprof/  Go profiles\n"))
	})
	return mux
}

// PoolView is the JSON form of a pool.
type PoolView struct {
	Name     string        `json:"name"`
	Backends []BackendView `json:"backends"`
}

// BackendView is the JSON form of a backend's state.
type BackendView struct {
	URL      string `json:"url"`
	Weight   int    `json:"weight"`
	Usable   bool   `json:"usable"`
	InFlight int64  `json:"in_flight"`
}

func poolViews(pools []*balancer.Pool) []PoolView {
	views := make([]PoolView, 0, len(pools))
	for _, p := range pools {
		v := PoolView{Name: p.Name()}
		for _, b := range p.Backends() {
			v.Backends = append(v.Backends, BackendView{
				URL: b.URL().String(), Weight: b.Weight(), Usable: b.Usable(), InFlight: b.InFlight(),
			})
		}
		views = append(views, v)
	}
	return views
}
