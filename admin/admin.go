// Package admin owns the operator-facing listener: liveness and readiness,
// Prometheus metrics, a JSON status of the whole process, the live
// dashboard and the configuration in force, all read from the state other
// packages keep (balancer, metrics, the configuration in force). It changes
// nothing it shows; POST /api/reload asks cmd to reload.
package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"io/fs"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/portico/portico/balancer"
	"github.com/portico/portico/config"
	"github.com/portico/portico/metrics"
	"github.com/portico/portico/tlsmgr"
)

// Options is what the admin listener shows. Funcs are called per request,
// so that it always shows what is in force now.
type Options struct {
	Version      string
	Started      time.Time
	Config       func() *config.Config // the configuration in force
	Pools        func() []*balancer.Pool
	Listeners    func() []Listener
	Certificates func() []tlsmgr.CertInfo // nil without HTTPS
	Metrics      *metrics.Metrics         // nil: no /metrics, no charts
	Ready        *Readiness
	// Reload, when set, reloads the configuration from its file, for
	// POST /api/reload (config.go).
	Reload func() ReloadResult

	// Token returns the admin token in force: when it is set, every path
	// but /healthz and /readyz needs it. Pprof reports whether Go's
	// profiles are served under /debug/pprof/. Both are read per request,
	// so that a reload that changes them holds on connections opened
	// before it too. Nil: no token, no profiles.
	Token func() string
	Pprof func() bool
}

// Listener is one bound listener, for the status page.
type Listener struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
}

// Readiness says whether Portico should be sent traffic: cmd sets it once
// the configuration is in force and every listener is bound, and clears it
// when shutdown starts. The zero value is not ready.
type Readiness struct{ ready atomic.Bool }

// Set marks Portico ready or not.
func (r *Readiness) Set(ready bool) { r.ready.Store(ready) }

// Ready reports the flag; a nil Readiness is never ready.
func (r *Readiness) Ready() bool { return r != nil && r.ready.Load() }

//go:embed ui
var uiFiles embed.FS

// Handler serves the admin listener.
func Handler(o Options) http.Handler {
	private := http.NewServeMux()
	private.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		serveUI(w, r, "ui/index.html")
	})
	ui, _ := fs.Sub(uiFiles, "ui")
	private.Handle("GET /ui/", http.StripPrefix("/ui/", uiHeaders(http.FileServerFS(ui))))
	private.HandleFunc("GET /api/status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, status(&o)) })
	private.HandleFunc("GET /api/pools", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, o.poolViews()) })
	o.configRoutes(private)
	if o.Metrics != nil {
		private.Handle("GET /metrics", o.Metrics.Handler())
		private.HandleFunc("GET /api/history", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, o.Metrics.History(r.URL.Query().Get("route")))
		})
	}
	for path, h := range map[string]http.HandlerFunc{
		"/debug/pprof/": pprof.Index, "/debug/pprof/profile": pprof.Profile, "/debug/pprof/trace": pprof.Trace,
		"/debug/pprof/symbol": pprof.Symbol, "/debug/pprof/cmdline": pprof.Cmdline,
	} {
		private.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if o.Pprof == nil || !o.Pprof() {
				http.NotFound(w, r)
				return
			}
			h(w, r)
		})
	}

	mux := http.NewServeMux()
	// Probes by orchestrators and load balancers carry no credentials.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { text(w, http.StatusOK, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if o.Ready.Ready() {
			text(w, http.StatusOK, "ready")
			return
		}
		text(w, http.StatusServiceUnavailable, "not ready")
	})
	mux.Handle("/", requireToken(o.Token, private))
	return mux
}

// requireToken lets through requests that carry the token in force, as
// "Authorization: Bearer TOKEN" (Prometheus, curl) or as the password of
// HTTP Basic authentication, which is what a browser can send for a page.
// Comparing digests keeps the time taken independent of the token.
func requireToken(token func() string, next http.Handler) http.Handler {
	if token == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := token()
		if t == "" {
			next.ServeHTTP(w, r)
			return
		}
		want := sha256.Sum256([]byte(t))
		got, ok := credentials(r)
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Add("WWW-Authenticate", `Bearer realm="Portico admin"`)
			w.Header().Add("WWW-Authenticate", `Basic realm="Portico admin", charset="UTF-8"`)
			text(w, http.StatusUnauthorized, "unauthorized: send Authorization: Bearer <admin_token>")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func credentials(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		return strings.TrimSpace(h[7:]), true
	}
	_, pass, ok := r.BasicAuth()
	return pass, ok
}

// uiHeaders keeps the dashboard to its own files (no inline scripts, no
// other origins) and out of frames.
func uiHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		next.ServeHTTP(w, r)
	})
}

func serveUI(w http.ResponseWriter, r *http.Request, name string) {
	uiHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, uiFiles, name)
	})).ServeHTTP(w, r)
}

func text(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n"))
}
