package middleware

import (
	"net/http"
	"sort"
	"strings"

	"github.com/portico/portico/config"
	"github.com/portico/portico/reqinfo"
)

// headers is type "headers": set, add and remove request headers before
// forwarding and response headers before they are sent (to backend
// answers and to Portico's own, such as a 502). Removal comes first, then
// set, then add. Values without placeholders are built once; others are
// filled in per request.
type headers struct {
	reqRemove, respRemove []string
	reqSet, reqAdd        []headerRule
	respSet, respAdd      []headerRule
}

type headerRule struct {
	name  string   // canonical
	fixed []string // the value when it has no placeholder
	parts []part   // otherwise
}

// part is literal text, or a placeholder when ph is set.
type part struct {
	text string
	ph   string
}

func newHeaders(o *config.Headers) Middleware {
	return &headers{
		reqRemove:  canonical(o.RequestRemove),
		respRemove: canonical(o.ResponseRemove),
		reqSet:     rules(o.RequestSet),
		reqAdd:     rules(o.RequestAdd),
		respSet:    rules(o.ResponseSet),
		respAdd:    rules(o.ResponseAdd),
	}
}

func canonical(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = http.CanonicalHeaderKey(n)
	}
	return out
}

func rules(m map[string]string) []headerRule {
	out := make([]headerRule, 0, len(m))
	for name, val := range m {
		out = append(out, compileRule(http.CanonicalHeaderKey(name), val))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func compileRule(name, val string) headerRule {
	var parts []part
	rest := val
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			break
		}
		ph := rest[i+1 : i+j]
		if !isPlaceholder(ph) {
			parts = append(parts, part{text: rest[:i+1]})
			rest = rest[i+1:]
			continue
		}
		parts = append(parts, part{text: rest[:i]}, part{ph: ph})
		rest = rest[i+j+1:]
	}
	if len(parts) == 0 {
		return headerRule{name: name, fixed: []string{val}}
	}
	return headerRule{name: name, parts: append(parts, part{text: rest})}
}

func isPlaceholder(s string) bool {
	for _, p := range config.HeaderPlaceholders {
		if s == p {
			return true
		}
	}
	return false
}

// value fills in the rule for one request.
func (h *headerRule) value(r *http.Request) []string {
	if h.fixed != nil {
		return h.fixed
	}
	var b strings.Builder
	info := reqinfo.From(r.Context())
	for _, p := range h.parts {
		switch p.ph {
		case "":
			b.WriteString(p.text)
		case "client_ip":
			if info != nil && info.ClientIP.IsValid() {
				b.WriteString(info.ClientIP.String())
			}
		case "request_id":
			if info != nil {
				b.WriteString(info.RequestID)
			}
		case "host":
			b.WriteString(r.Host)
		case "scheme":
			b.WriteString(scheme(r))
		}
	}
	return []string{b.String()}
}

func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

func apply(hd http.Header, remove []string, set, add []headerRule, r *http.Request) {
	for _, n := range remove {
		delete(hd, n)
	}
	for i := range set {
		hd[set[i].name] = set[i].value(r)
	}
	for i := range add {
		hd[add[i].name] = append(hd[add[i].name], add[i].value(r)...)
	}
}

func (m *headers) Wrap(next http.Handler, _ string) http.Handler {
	hasResp := len(m.respRemove)+len(m.respSet)+len(m.respAdd) > 0
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apply(r.Header, m.reqRemove, m.reqSet, m.reqAdd, r)
		if hasResp {
			w = &responseRules{ResponseWriter: w, m: m, r: r}
		}
		next.ServeHTTP(w, r)
	})
}

// responseRules applies the response rules once, just before the header is
// sent. Interim 1xx answers pass through untouched.
type responseRules struct {
	http.ResponseWriter
	m    *headers
	r    *http.Request
	done bool
}

func (w *responseRules) before() {
	if !w.done {
		w.done = true
		apply(w.ResponseWriter.Header(), w.m.respRemove, w.m.respSet, w.m.respAdd, w.r)
	}
}

func (w *responseRules) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.before()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseRules) Write(p []byte) (int, error) {
	w.before()
	return w.ResponseWriter.Write(p)
}

// FlushError sends the header too, so it applies the rules first.
func (w *responseRules) FlushError() error {
	w.before()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush is FlushError for callers that look for http.Flusher.
func (w *responseRules) Flush() { _ = w.FlushError() }

// Unwrap lets http.ResponseController reach Hijack and deadlines.
func (w *responseRules) Unwrap() http.ResponseWriter { return w.ResponseWriter }
