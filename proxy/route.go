package proxy

import (
	"bytes"
	"net/http"
	"sort"
	"strings"

	"github.com/portico/portico/metrics"
)

// route is one [[routes]] entry, resolved: its handler forwards to its pool.
type route struct {
	name    string // host+prefix, for logs
	host    string // lower case, no trailing dot; "*.x" for wildcards; "" for any
	prefix  string
	strip   bool
	pool    string
	maxBody int64 // max_body_bytes; 0: unlimited
	handler http.Handler
	stats   *metrics.Route // nil without metrics
}

// matches reports whether path is under the route's prefix, on whole segments:
// "/api" matches "/api" and "/api/x" but not "/apix".
func (rt *route) matches(path string) bool {
	p := rt.prefix
	if !strings.HasPrefix(path, p) {
		return false
	}
	return len(path) == len(p) || p[len(p)-1] == '/' || path[len(p)] == '/'
}

// routeTable finds the route for a request: an exact host beats a wildcard
// host, which beats a host-less route; within a host group the longest
// matching prefix wins, and a group with no matching prefix falls through to
// the next. It is immutable once built and matching allocates nothing.
type routeTable struct {
	exact    map[string][]*route // by host
	wildcard map[string][]*route // by the part after "*."
	any      []*route
}

func newRouteTable(routes []*route) routeTable {
	t := routeTable{exact: map[string][]*route{}, wildcard: map[string][]*route{}}
	for _, rt := range routes {
		switch {
		case rt.host == "":
			t.any = append(t.any, rt)
		case strings.HasPrefix(rt.host, "*."):
			t.wildcard[rt.host[2:]] = append(t.wildcard[rt.host[2:]], rt)
		default:
			t.exact[rt.host] = append(t.exact[rt.host], rt)
		}
	}
	longestFirst := func(rs []*route) {
		sort.SliceStable(rs, func(i, j int) bool { return len(rs[i].prefix) > len(rs[j].prefix) })
	}
	for _, rs := range t.exact {
		longestFirst(rs)
	}
	for _, rs := range t.wildcard {
		longestFirst(rs)
	}
	longestFirst(t.any)
	return t
}

func firstMatch(rs []*route, path string) *route {
	for _, rt := range rs {
		if rt.matches(path) {
			return rt
		}
	}
	return nil
}

// maxHostLen is the longest DNS name; longer Host headers match host-less routes only.
const maxHostLen = 253

func (t *routeTable) match(hostport, path string) *route {
	var buf [maxHostLen]byte
	if host := normalizeHost(hostport, &buf); len(host) > 0 {
		// string(bytes) inside a map index does not allocate.
		if rt := firstMatch(t.exact[string(host)], path); rt != nil {
			return rt
		}
		if dot := bytes.IndexByte(host, '.'); dot > 0 {
			if rt := firstMatch(t.wildcard[string(host[dot+1:])], path); rt != nil {
				return rt
			}
		}
	}
	return firstMatch(t.any, path)
}

// normalizeHost writes the host without port or trailing dot, in lower case,
// into buf. A host too long for a DNS name comes back empty. Only digits
// make a port (RFC 9110 §7.2): "a.com:x" is no name of a.com.
func normalizeHost(h string, buf *[maxHostLen]byte) []byte {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && isPort(h[i+1:]) && (h[0] != '[' || h[i-1] == ']') {
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	if len(h) > len(buf) {
		return nil
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return buf[:len(h)]
}

func isPort(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
