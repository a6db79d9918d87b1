package middleware

import (
	"net/http"
	"net/netip"

	"github.com/portico/portico/config"
	"github.com/portico/portico/reqinfo"
)

// ipFilter is type "ip_filter": on the client IP the proxy resolved (never
// a header an untrusted client sent), deny wins over allow; with an allow
// list, anything not on it is refused too. 403 either way.
type ipFilter struct {
	allow, deny []netip.Prefix
	rejected    Counter
}

func newIPFilter(name string, o *config.IPFilter, env Env) Middleware {
	return &ipFilter{allow: o.AllowNets, deny: o.DenyNets, rejected: env.counter(name, ReasonForbidden)}
}

func (f *ipFilter) allowed(ip netip.Addr) bool {
	if !ip.IsValid() {
		return len(f.allow) == 0 // no address to check: only a deny list lets it on
	}
	ip = ip.Unmap()
	for _, p := range f.deny {
		if p.Contains(ip) {
			return false
		}
	}
	if len(f.allow) == 0 {
		return true
	}
	for _, p := range f.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func (f *ipFilter) Wrap(next http.Handler, _ string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ip netip.Addr
		if info := reqinfo.From(r.Context()); info != nil {
			ip = info.ClientIP
		}
		if !f.allowed(ip) {
			f.rejected.Inc()
			refuse(w, http.StatusForbidden, "forbidden")
			return
		}
		next.ServeHTTP(w, r)
	})
}
