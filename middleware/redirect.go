package middleware

import (
	"net/http"
	"net/url"
	"regexp"
	"sync"

	"github.com/portico/portico/config"
)

// redirect is type "redirect": a request whose URL, written
// scheme://host/path?query, matches from is answered with a redirect to
// to, in which $1 or ${name} stand for what the groups captured.
type redirect struct {
	from   *regexp.Regexp
	to     []byte
	status int
}

func newRedirect(o *config.Redirect) Middleware {
	return &redirect{from: regexp.MustCompile(o.From), to: []byte(o.To), status: o.Status}
}

// urlBufs hold the URL a redirect matches against; matching a []byte from a
// pool spares building a string per request.
var urlBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

func (m *redirect) Wrap(next http.Handler, _ string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bp := urlBufs.Get().(*[]byte)
		u := append((*bp)[:0], scheme(r)...)
		u = append(u, "://"...)
		u = append(u, r.Host...)
		u = append(u, r.URL.EscapedPath()...)
		if r.URL.RawQuery != "" {
			u = append(u, '?')
			u = append(u, r.URL.RawQuery...)
		}
		*bp = u
		match := m.from.FindSubmatchIndex(u)
		if match == nil {
			urlBufs.Put(bp)
			next.ServeHTTP(w, r)
			return
		}
		loc := string(m.from.Expand(nil, m.to, u, match))
		urlBufs.Put(bp)
		http.Redirect(w, r, loc, m.status)
	})
}

// rewrite is type "rewrite": the path, if path_regex matches it, becomes
// replacement (with $1 references) before forwarding. The request the
// access log sees keeps its original path.
type rewrite struct {
	re   *regexp.Regexp
	repl string
}

func newRewrite(o *config.Rewrite) Middleware {
	return &rewrite{re: regexp.MustCompile(o.PathRegex), repl: o.Replacement}
}

func (m *rewrite) Wrap(next http.Handler, _ string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		match := m.re.FindStringSubmatchIndex(p)
		if match == nil {
			next.ServeHTTP(w, r)
			return
		}
		np := string(m.re.ExpandString(nil, m.repl, p, match))
		np = p[:match[0]] + np + p[match[1]:]
		if np == "" || np[0] != '/' {
			np = "/" + np
		}
		// A copy of the request and its URL: the proxy's original, which
		// the access log reads, keeps its path.
		r2 := new(http.Request)
		*r2 = *r
		u := new(url.URL)
		*u = *r.URL
		u.Path, u.RawPath = np, ""
		r2.URL = u
		next.ServeHTTP(w, r2)
	})
}
