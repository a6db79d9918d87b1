package admin

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/portico/portico/config"
	"github.com/portico/portico/metrics"
)

// Status is the JSON of /api/status: everything the dashboard shows.
type Status struct {
	Version       string           `json:"version"`
	Started       time.Time        `json:"started"`
	UptimeSeconds float64          `json:"uptime_seconds"`
	Ready         bool             `json:"ready"`
	Config        ConfigView       `json:"config"`
	LastReload    *ReloadView      `json:"last_reload"` // null: no reload since start
	Listeners     []Listener       `json:"listeners"`
	Traffic       *metrics.Summary `json:"traffic,omitempty"` // every request, routed or not
	Routes        []RouteView      `json:"routes"`
	Pools         []PoolView       `json:"pools"`
	Certificates  []CertView       `json:"certificates"`
}

// ConfigView summarises the configuration in force; it never includes
// secrets such as the admin token.
type ConfigView struct {
	File     string `json:"file"`
	SHA256   string `json:"sha256"`
	Routes   int    `json:"routes"`
	Pools    int    `json:"pools"`
	Backends int    `json:"backends"`
	HTTPS    bool   `json:"https"`
	ACME     bool   `json:"acme"`
}

// ReloadView is the last configuration reload.
type ReloadView struct {
	Time time.Time `json:"time"`
	OK   bool      `json:"ok"`
}

// RouteView is a route with its middleware chain and recent traffic.
type RouteView struct {
	Name        string           `json:"name"`
	Host        string           `json:"host"`
	PathPrefix  string           `json:"path_prefix"`
	StripPrefix bool             `json:"strip_prefix"`
	Pool        string           `json:"pool"`
	Middlewares []string         `json:"middlewares"`
	Traffic     *metrics.Summary `json:"traffic,omitempty"`
}

// CertView is a certificate in use.
type CertView struct {
	Names    []string  `json:"names"`
	Source   string    `json:"source"`
	NotAfter time.Time `json:"not_after"`
	DaysLeft float64   `json:"days_left"`
}

func status(o *Options) Status {
	now := time.Now()
	s := Status{
		Version: o.Version, Started: o.Started, UptimeSeconds: now.Sub(o.Started).Seconds(),
		Ready: o.Ready.Ready(), Pools: o.poolViews(),
		Listeners: []Listener{}, Routes: []RouteView{}, Certificates: []CertView{},
	}
	if o.Listeners != nil {
		s.Listeners = o.Listeners()
	}
	var traffic map[string]metrics.Summary
	if m := o.Metrics; m != nil {
		traffic = m.Summaries()
		if t, ok := traffic[""]; ok {
			s.Traffic = &t
		}
		if r := m.LastReload(); r != nil {
			s.LastReload = &ReloadView{Time: r.Time, OK: r.OK}
		}
	}
	if cfg := o.config(); cfg != nil {
		s.Config = ConfigView{
			File: cfg.File, SHA256: cfg.Checksum, Routes: len(cfg.Routes), Pools: len(cfg.Pools),
			HTTPS: cfg.Server.HTTPSAddr != "", ACME: cfg.TLS.ACME.Enabled,
		}
		for _, p := range cfg.Pools {
			s.Config.Backends += len(p.Backends)
		}
		for _, r := range cfg.Routes {
			rv := RouteView{
				Name: r.Name, Host: r.Host, PathPrefix: r.PathPrefix, StripPrefix: r.StripPrefix, Pool: r.Pool,
				// The chain as it runs: server.middlewares first.
				Middlewares: append(append([]string{}, cfg.Server.Middlewares...), r.Middlewares...),
			}
			if t, ok := traffic[r.Name]; ok {
				rv.Traffic = &t
			}
			s.Routes = append(s.Routes, rv)
		}
	}
	if o.Certificates != nil {
		for _, c := range o.Certificates() {
			s.Certificates = append(s.Certificates, CertView{
				Names: c.Names, Source: c.Source, NotAfter: c.NotAfter,
				DaysLeft: c.NotAfter.Sub(now).Hours() / 24,
			})
		}
	}
	return s
}

// PoolView is the JSON form of a pool.
type PoolView struct {
	Name        string           `json:"name"`
	Policy      string           `json:"balance"`
	PanicMode   bool             `json:"panic_mode"`
	Usable      int              `json:"usable_backends"`
	Backends    []BackendView    `json:"backends"`
	Transitions []TransitionView `json:"transitions"` // latest state changes, oldest first
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

// TransitionView is one change of a backend's state.
type TransitionView struct {
	Time    time.Time `json:"time"`
	Backend string    `json:"backend"`
	From    string    `json:"from"`
	To      string    `json:"to"`
	Reason  string    `json:"reason"`
}

func (o *Options) poolViews() []PoolView {
	if o.Pools == nil {
		return []PoolView{}
	}
	pools := o.Pools()
	views := make([]PoolView, 0, len(pools))
	for _, p := range pools {
		ps := p.State()
		v := PoolView{Name: ps.Name, Policy: ps.Policy, PanicMode: ps.PanicMode, Usable: ps.Usable, Transitions: []TransitionView{}}
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
		for _, t := range ps.Transitions {
			v.Transitions = append(v.Transitions, TransitionView{Time: t.Time, Backend: t.Backend, From: t.From, To: t.To, Reason: t.Reason})
		}
		views = append(views, v)
	}
	return views
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (o *Options) config() *config.Config {
	if o.Config == nil {
		return nil
	}
	return o.Config()
}
