package proxy

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/portico/portico/config"
)

// FuzzRouteMatch checks the route table against refMatch, a plain reading
// of the routing rules: for routes that validation accepts (one per line of
// routes, "host prefix", host "-" for none) and any Host and path, both pick
// the same route. Seeds are in testdata/fuzz/FuzzRouteMatch.
func FuzzRouteMatch(f *testing.F) {
	f.Fuzz(func(t *testing.T, routes, host, path string) {
		doc := "[pools.p]\nbackends = [{ url = \"http://127.0.0.1:1\" }]\n"
		for i, line := range strings.Split(routes, "\n") {
			if i == 8 {
				break
			}
			h, prefix, ok := strings.Cut(line, " ")
			if !ok || !utf8.ValidString(line) {
				return
			}
			doc += fmt.Sprintf("[[routes]]\npool = \"p\"\nname = \"r%d\"\npath_prefix = %s\n", i, tomlString(prefix))
			if h != "-" {
				doc += "host = " + tomlString(h) + "\n"
			}
		}
		cfg, err := config.Parse([]byte(doc), "fuzz.toml")
		if err != nil {
			return // not a configuration Portico would run
		}
		snap, err := NewSnapshot(cfg, discardLog)
		if err != nil {
			t.Fatalf("NewSnapshot of a valid configuration: %v", err)
		}
		got := "<none>"
		if rt := snap.routes.match(host, path); rt != nil {
			got = rt.name
		}
		if want := refMatch(cfg.Routes, host, path); got != want {
			t.Errorf("Host %q, path %q: table picks %s, reference %s\n%s", host, path, got, want, doc)
		}
	})
}

// refMatch is the routing rule, read plainly: the request's host (port and
// one trailing dot dropped, ASCII case ignored, longer than a DNS name:
// none) picks, in this order, the routes of that exact host, the wildcard
// routes whose "*" stands for its first label, and the routes without a
// host; the first of these groups with a route whose prefix covers the path
// on whole segments wins, and within it the longest prefix (the first
// written, on a tie).
func refMatch(routes []*config.Route, hostport, path string) string {
	host := refHost(hostport)
	if len(host) > 253 {
		host = ""
	}
	groups := []func(rh string) bool{
		func(rh string) bool { return host != "" && rh != "" && !strings.HasPrefix(rh, "*.") && rh == host },
		func(rh string) bool {
			label, ok := strings.CutSuffix(host, rh[min(1, len(rh)):])
			return host != "" && strings.HasPrefix(rh, "*.") && ok && label != "" && !strings.Contains(label, ".")
		},
		func(rh string) bool { return rh == "" },
	}
	for _, in := range groups {
		var best *config.Route
		for _, r := range routes {
			rh := strings.TrimSuffix(asciiLower(r.Host), ".")
			if in(rh) && coversPath(r.PathPrefix, path) && (best == nil || len(r.PathPrefix) > len(best.PathPrefix)) {
				best = r
			}
		}
		if best != nil {
			return best.Name
		}
	}
	return "<none>"
}

// refHost is the host of a Host header, RFC 9110 §7.2: uri-host [":" port],
// where port is digits and an IPv6 literal is in brackets.
func refHost(hostport string) string {
	h := hostport
	if i := strings.LastIndex(h, ":"); i >= 0 && strings.Trim(h[i+1:], "0123456789") == "" &&
		(!strings.HasPrefix(h, "[") || strings.HasSuffix(h[:i], "]")) {
		h = h[:i]
	}
	return strings.TrimSuffix(asciiLower(h), ".")
}

func coversPath(prefix, path string) bool {
	return path == prefix || strings.HasPrefix(path, prefix) && (strings.HasSuffix(prefix, "/") || path[len(prefix)] == '/')
}

func asciiLower(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
