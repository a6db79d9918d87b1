package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// want is one expected problem: its line, its key and part of its message.
type want struct {
	line int
	key  string
	msg  string
}

// A valid pool and a valid route, two lines each, for cases about something else.
var (
	okPool  = []string{`[pools.app]`, `backends = [{ url = "http://10.0.0.1:8080" }]`}
	okRoute = []string{`[[routes]]`, `pool = "app"`}
)

// lines concatenates groups of lines.
func lines(groups ...[]string) []string {
	var out []string
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

// ls is shorthand for a literal group of lines.
func ls(l ...string) []string { return l }

// tail appends a valid pool and route after the lines under test.
func tail(l ...string) []string { return lines(l, okPool, okRoute) }

// backendURL is a document whose only backend URL is on line 3.
func backendURL(u string) []string {
	return lines(ls(`[pools.app]`, `backends = [`, fmt.Sprintf(`  { url = %q },`, u), `]`), okRoute)
}

// routeHost is a document whose only route host is on line 4.
func routeHost(h string) []string {
	return lines(okPool, ls(`[[routes]]`, fmt.Sprintf(`host = %q`, h), `pool = "app"`))
}

const (
	urlShape   = "needs a scheme and a host"
	urlExtra   = "must be scheme://host[:port] only"
	wildcard   = "a wildcard must be the whole first label"
	unknownKey = "unknown key"
)

type problemCase struct {
	name  string
	lines []string
	want  []want
}

var problemCases = []problemCase{
	// Unknown keys, reported where written.
	{name: "unknown top-level key", lines: tail(`bogus = 1`),
		want: []want{{1, "bogus", unknownKey}}},
	{name: "unknown top-level table reported once", lines: tail(`[bogus]`, `x = 1`, `y = { z = 2 }`),
		want: []want{{1, "bogus", unknownKey}}},
	{name: "unknown key in server", lines: tail(`[server]`, `http_addr = ":8080"`, `http_adr = ":80"`),
		want: []want{{3, "server.http_adr", unknownKey}}},
	{name: "unknown key in log", lines: tail(`[log]`, `levle = "debug"`),
		want: []want{{2, "log.levle", unknownKey}}},
	{name: "unknown key in pool", lines: lines(okPool, ls(`retry = 3`), okRoute),
		want: []want{{3, "pools.app.retry", unknownKey}}},
	{name: "unknown key in inline backend table",
		lines: lines(ls(
			`[pools.app]`,
			`backends = [`,
			`  { url = "http://10.0.0.1:8080" },`,
			`  { url = "http://10.0.0.2:8080", wieght = 2 },`,
			`]`), okRoute),
		want: []want{{4, "pools.app.backends[1].wieght", unknownKey}}},
	{name: "unknown key in routes entry", lines: lines(okPool, ls(`[[routes]]`, `pool = "app"`, `strip = true`)),
		want: []want{{5, "routes[0].strip", unknownKey}}},
	{name: "unknown key in second routes entry only",
		lines: lines(okPool, ls(
			`[[routes]]`,
			`pool = "app"`,
			`[[routes]]`,
			`path_prefix = "/api"`,
			`pool = "app"`,
			`strip = true`)),
		want: []want{{8, "routes[1].strip", unknownKey}}},
	{name: "same unknown key in two routes entries",
		lines: lines(okPool, ls(
			`[[routes]]`,
			`pool = "app"`,
			`strip = true`,
			`[[routes]]`,
			`path_prefix = "/api"`,
			`strip = true`,
			`pool = "app"`)),
		want: []want{{5, "routes[0].strip", unknownKey}, {8, "routes[1].strip", unknownKey}}},
	{name: "unknown key with an array value reported once",
		lines: tail(`[server]`, `trusted_proxy = ["10.0.0.0/8", "192.168.0.0/16"]`),
		want:  []want{{2, "server.trusted_proxy", unknownKey}}},
	{name: "unknown quoted key", lines: tail(`[server]`, `"http addr" = ":80"`),
		want: []want{{2, "server.http addr", unknownKey}}},

	// Durations.
	{name: "bad server durations",
		lines: tail(`[server]`, `read_header_timeout = "10"`, `idle_timeout = "-5s"`, `shutdown_timeout = "soon"`),
		want: []want{
			{2, "server.read_header_timeout", `invalid duration "10"`},
			{3, "server.idle_timeout", `invalid duration "-5s"`},
			{4, "server.shutdown_timeout", `invalid duration "soon"`},
		}},
	{name: "bad pool durations",
		lines: lines(okPool, ls(`dial_timeout = "2 s"`, `response_header_timeout = 30`), okRoute),
		want: []want{
			{3, "pools.app.dial_timeout", `invalid duration "2 s"`},
			{4, "pools.app.response_header_timeout", `invalid duration "30"`},
		}},

	// Routes and pools.
	{name: "route names a missing pool", lines: lines(okPool, ls(`[[routes]]`, `pool = "ap"`)),
		want: []want{{4, "routes[0].pool", `no pool named "ap"`}}},
	{name: "route names no pool", lines: lines(okPool, ls(`[[routes]]`, `path_prefix = "/x"`)),
		want: []want{{3, "routes[0].pool", "missing"}}},
	{name: "pool without backends key", lines: lines(ls(`[pools.app]`, `balance = "round_robin"`), okRoute),
		want: []want{{1, "pools.app.backends", "at least one backend"}}},
	{name: "pool with empty backends", lines: lines(ls(`[pools.app]`, `backends = []`), okRoute),
		want: []want{{2, "pools.app.backends", "at least one backend"}}},
	{name: "no routes at all", lines: okPool,
		want: []want{{1, "routes", "at least one [[routes]] entry"}}},
	{name: "unknown balance", lines: lines(ls(`[pools.app]`, `balance = "random"`, okPool[1]), okRoute),
		want: []want{{2, "pools.app.balance", `unknown balance "random"`}}},
	{name: "retries out of range",
		lines: ls(
			`[pools.a]`,
			`backends = [{ url = "http://10.0.0.1:8080" }]`,
			`retries = 11`,
			`[pools.b]`,
			`backends = [{ url = "http://10.0.0.1:8080" }]`,
			`retries = -1`,
			`[[routes]]`,
			`pool = "a"`),
		want: []want{
			{3, "pools.a.retries", "must be between 0 and 10, got 11"},
			{6, "pools.b.retries", "must be between 0 and 10, got -1"},
		}},
	{name: "max_idle_conns_per_backend zero", lines: lines(okPool, ls(`max_idle_conns_per_backend = 0`), okRoute),
		want: []want{{3, "pools.app.max_idle_conns_per_backend", "must be at least 1, got 0"}}},

	// Backend URLs.
	{name: "backend url without scheme (ip:port)", lines: backendURL("10.0.0.1:8080"),
		want: []want{{3, "pools.app.backends[0].url", urlShape}}},
	{name: "backend url without scheme (host:port)", lines: backendURL("backend.internal:8080"),
		want: []want{{3, "pools.app.backends[0].url", urlShape}}},
	{name: "backend url without scheme (//host)", lines: backendURL("//10.0.0.1:8080"),
		want: []want{{3, "pools.app.backends[0].url", urlShape}}},
	{name: "backend url without host", lines: backendURL("http://"),
		want: []want{{3, "pools.app.backends[0].url", urlShape}}},
	{name: "backend url without host, with path", lines: backendURL("http:///app"),
		want: []want{{3, "pools.app.backends[0].url", urlShape}}},
	{name: "backend url without host, with port", lines: backendURL("http://:8080"),
		want: []want{{3, "pools.app.backends[0].url", urlShape}}},
	{name: "backend url empty", lines: backendURL(""),
		want: []want{{3, "pools.app.backends[0].url", "missing"}}},
	{name: "backend url missing", lines: lines(ls(`[pools.app]`, `backends = [`, `  { weight = 2 },`, `]`), okRoute),
		want: []want{{3, "pools.app.backends[0].url", "missing"}}},
	{name: "backend url ftp", lines: backendURL("ftp://10.0.0.1"),
		want: []want{{3, "pools.app.backends[0].url", `unsupported scheme "ftp"`}}},
	{name: "backend url with path", lines: backendURL("http://10.0.0.1:8080/api"),
		want: []want{{3, "pools.app.backends[0].url", urlExtra}}},
	{name: "backend url with query", lines: backendURL("http://10.0.0.1:8080?x=1"),
		want: []want{{3, "pools.app.backends[0].url", urlExtra}}},
	{name: "backend url with slash and query", lines: backendURL("http://10.0.0.1:8080/?x=1"),
		want: []want{{3, "pools.app.backends[0].url", urlExtra}}},
	{name: "backend url with user", lines: backendURL("http://user@10.0.0.1:8080"),
		want: []want{{3, "pools.app.backends[0].url", urlExtra}}},
	{name: "backend url with fragment", lines: backendURL("http://10.0.0.1:8080#x"),
		want: []want{{3, "pools.app.backends[0].url", urlExtra}}},
	{name: "backend url port out of range", lines: backendURL("http://10.0.0.1:99999"),
		want: []want{{3, "pools.app.backends[0].url", "port"}}},
	{name: "backend weights out of range",
		lines: lines(ls(
			`[pools.app]`,
			`backends = [`,
			`  { url = "http://10.0.0.1:8080", weight = 0 },`,
			`  { url = "http://10.0.0.2:8080", weight = -1 },`,
			`  { url = "http://10.0.0.3:8080", weight = 1001 },`,
			`  { url = "http://10.0.0.4:8080", weight = 1000 },`,
			`  { url = "http://10.0.0.5:8080", weight = 1 },`,
			`]`), okRoute),
		want: []want{
			{3, "pools.app.backends[0].weight", "must be between 1 and 1000, got 0"},
			{4, "pools.app.backends[1].weight", "must be between 1 and 1000, got -1"},
			{5, "pools.app.backends[2].weight", "must be between 1 and 1000, got 1001"},
		}},
	{name: "duplicate backend urls",
		lines: lines(ls(
			`[pools.app]`,
			`backends = [`,
			`  { url = "http://10.0.0.1:8080" },`,
			`  { url = "http://10.0.0.2:8080" },`,
			`  { url = "http://10.0.0.1:8080", weight = 2 },`,
			`]`), okRoute),
		want: []want{{5, "pools.app.backends[2].url", "duplicates backends[0]"}}},
	{name: "duplicate backend urls, implicit port 80",
		lines: lines(ls(
			`[pools.app]`,
			`backends = [`,
			`  { url = "http://10.0.0.1" },`,
			`  { url = "http://10.0.0.1:80/" },`,
			`]`), okRoute),
		want: []want{{4, "pools.app.backends[1].url", "duplicates backends[0]"}}},
	{name: "duplicate backend urls differing in host case",
		lines: lines(ls(
			`[pools.app]`,
			`backends = [`,
			`  { url = "http://Backend.internal:8080" },`,
			`  { url = "http://backend.internal:8080" },`,
			`]`), okRoute),
		want: []want{{4, "pools.app.backends[1].url", "duplicates backends[0]"}}},

	// Duplicate routes.
	{name: "duplicate routes",
		lines: lines(okPool, ls(
			`[[routes]]`,
			`host = "app.example.com"`,
			`path_prefix = "/api"`,
			`pool = "app"`,
			`[[routes]]`,
			`host = "app.example.com"`,
			`path_prefix = "/api"`,
			`pool = "app"`)),
		want: []want{{7, "routes[1]", "duplicates routes[0]"}}},
	{name: "duplicate routes, hosts differ in case",
		lines: lines(okPool, ls(
			`[[routes]]`,
			`host = "App.Example.com"`,
			`pool = "app"`,
			`[[routes]]`,
			`host = "app.example.COM"`,
			`pool = "app"`)),
		want: []want{{6, "routes[1]", "duplicates routes[0]"}}},
	{name: "duplicate routes, default and explicit path_prefix",
		lines: lines(okPool, ls(
			`[[routes]]`,
			`pool = "app"`,
			`[[routes]]`,
			`path_prefix = "/api"`,
			`pool = "app"`,
			`[[routes]]`,
			`path_prefix = "/"`,
			`pool = "app"`)),
		want: []want{{8, "routes[2]", "duplicates routes[0]"}}},

	// Route fields.
	{name: "path_prefix without leading slash", lines: lines(okPool, ls(`[[routes]]`, `path_prefix = "api"`, `pool = "app"`)),
		want: []want{{4, "routes[0].path_prefix", `"api" must start with "/"`}}},
	{name: "host with port", lines: routeHost("app.example.com:8080"),
		want: []want{{4, "routes[0].host", "must not include a port"}}},
	{name: "IPv6 host with port", lines: routeHost("[::1]:8080"),
		want: []want{{4, "routes[0].host", "must not include a port"}}},
	{name: "wildcard in a middle label", lines: routeHost("a.*.com"),
		want: []want{{4, "routes[0].host", wildcard}}},
	{name: "wildcard glued to a label", lines: routeHost("*foo.com"),
		want: []want{{4, "routes[0].host", wildcard}}},
	{name: "two wildcards", lines: routeHost("*.*.example.com"),
		want: []want{{4, "routes[0].host", wildcard}}},
	{name: "host with a space", lines: routeHost("app example.com"),
		want: []want{{4, "routes[0].host", "is not a host name"}}},
	{name: "host with a path", lines: routeHost("app.example.com/x"),
		want: []want{{4, "routes[0].host", "is not a host name"}}},

	// Server and log.
	{name: "unparsable CIDRs",
		lines: tail(`[server]`, `trusted_proxies = [`, `  "10.0.0.0/8",`, `  "10.0.0.0/33",`, `  "not-an-ip",`, `]`),
		want: []want{
			{4, "server.trusted_proxies[1]", `invalid CIDR "10.0.0.0/33"`},
			{5, "server.trusted_proxies[2]", `invalid CIDR "not-an-ip"`},
		}},
	{name: "bad log level and format", lines: tail(`[log]`, `level = "verbose"`, `format = "xml"`),
		want: []want{
			{2, "log.level", `unknown level "verbose"`},
			{3, "log.format", `unknown format "xml"`},
		}},
	{name: "bad addresses",
		lines: tail(`[server]`, `http_addr = "localhost"`, `https_addr = "443"`, `admin_addr = "127.0.0.1:99999"`),
		want: []want{
			{2, "server.http_addr", `invalid address "localhost"`},
			{3, "server.https_addr", `invalid address "443"`},
			{4, "server.admin_addr", `invalid port in "127.0.0.1:99999"`},
		}},
	{name: "empty http_addr and named port", lines: tail(`[server]`, `http_addr = ""`, `admin_addr = ":http"`),
		want: []want{
			{2, "server.http_addr", `invalid address ""`},
			{3, "server.admin_addr", `invalid port in ":http"`},
		}},
	{name: "max_header_bytes too small", lines: tail(`[server]`, `max_header_bytes = 512`),
		want: []want{{2, "server.max_header_bytes", "must be at least 1024, got 512"}}},
	{name: "admin on every interface without a token", lines: tail(`[server]`, `http_addr = ":80"`, `admin_addr = ":9090"`),
		want: []want{{3, "server.admin_addr", `":9090" is reachable from other hosts: set server.admin_token`}}},
	{name: "admin on a public address without a token", lines: tail(`[server]`, `admin_addr = "192.0.2.1:9090"`),
		want: []want{{2, "server.admin_addr", "set server.admin_token"}}},
	{name: "admin on a host name without a token", lines: tail(`[server]`, `admin_addr = "admin.internal:9090"`),
		want: []want{{2, "server.admin_addr", "set server.admin_token"}}},
	{name: "admin token too short", lines: tail(`[server]`, `admin_addr = ":9090"`, `admin_token = "hunter2"`),
		want: []want{{3, "server.admin_token", "too short: use at least 16 characters"}}},
	{name: "input limits out of range",
		lines: lines(
			ls(`[server]`, `max_header_count = 0`, `max_conns = -1`, `max_conns_per_ip = -2`),
			okPool, ls(`max_response_header_bytes = 100`),
			ls(`[[routes]]`, `pool = "app"`, `max_body_bytes = -1`)),
		want: []want{
			{2, "server.max_header_count", "must be at least 1, got 0"},
			{3, "server.max_conns", "must be 0 (unlimited) or more, got -1"},
			{4, "server.max_conns_per_ip", "must be 0 (unlimited) or more, got -2"},
			{7, "pools.app.max_response_header_bytes", "must be at least 1024, got 100"},
			{10, "routes[0].max_body_bytes", "must be 0 (unlimited) or more, got -1"},
		}},
}

// checkProblems compares ps with ws and returns what differs, or "".
func checkProblems(ps Problems, ws []want) string {
	var b strings.Builder
	if len(ps) != len(ws) {
		fmt.Fprintf(&b, "got %d problems, want %d\n", len(ps), len(ws))
	}
	for i := 0; i < len(ps) && i < len(ws); i++ {
		p, w := ps[i], ws[i]
		if p.File != "test.toml" || p.Line != w.line || p.Col != 0 || p.Key != w.key || !strings.Contains(p.Msg, w.msg) {
			fmt.Fprintf(&b, "problem %d: got file=%q line=%d col=%d key=%q msg=%q; want line=%d key=%q msg containing %q\n",
				i, p.File, p.Line, p.Col, p.Key, p.Msg, w.line, w.key, w.msg)
		}
	}
	if b.Len() > 0 {
		fmt.Fprintf(&b, "all problems:\n%v", ps)
	}
	return b.String()
}

func TestParseValidationErrors(t *testing.T) { runProblemCases(t, problemCases) }

// runProblemCases parses each case's document and checks its problems.
func runProblemCases(t *testing.T, cases []problemCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := doc(tc.lines...)
			_, err := Parse([]byte(src), "test.toml")
			ps := problemsOf(t, err)
			if diff := checkProblems(ps, tc.want); diff != "" {
				t.Errorf("%s\ndocument:\n%s", diff, src)
			}
		})
	}
}

// A missing [[routes]] is reported on line 1, for an empty document too.
func TestParseNoRoutesIsReported(t *testing.T) {
	for name, src := range map[string]string{"no routes": doc(okPool...), "empty document": ""} {
		_, err := Parse([]byte(src), "test.toml")
		ps := problemsOf(t, err)
		found := false
		for _, p := range ps {
			if p.Key == "routes" && strings.Contains(p.Msg, "at least one [[routes]] entry") {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no routes problem in\n%v", name, ps)
		}
	}
}

func TestParseReportsEveryProblemAtOnceSortedByLine(t *testing.T) {
	// Validation visits server, log, pools, routes; the file lists them in
	// the opposite order, so the result must be sorted to come out by line.
	src := doc(
		`[[routes]]`,
		`pool = "app"`,
		`path_prefix = "api"`, // 3
		`[pools.app]`,
		`backends = [{ url = "ftp://10.0.0.1" }]`, // 5
		`retries = 99`, // 6
		`[server]`,
		`idle_timeout = "forever"`, // 8
		`[log]`,
		`level = "loud"`, // 10
	)
	cfg, err := Parse([]byte(src), "test.toml")
	if cfg != nil {
		t.Errorf("Parse returned a config along with problems")
	}
	ps := problemsOf(t, err)
	wantText := strings.Join([]string{
		`test.toml:3: routes[0].path_prefix: "api" must start with "/"`,
		`test.toml:5: pools.app.backends[0].url: unsupported scheme "ftp": want http, https or h2c`,
		`test.toml:6: pools.app.retries: must be between 0 and 10, got 99`,
		`test.toml:8: server.idle_timeout: invalid duration "forever": use a number with a unit, such as "2s" or "1m30s"`,
		`test.toml:10: log.level: unknown level "loud": want debug, info, warn or error`,
	}, "\n")
	if len(ps) != 5 {
		t.Fatalf("got %d problems, want 5:\n%v", len(ps), ps)
	}
	for i := 1; i < len(ps); i++ {
		if ps[i-1].Line > ps[i].Line {
			t.Errorf("problems not sorted by line: %d before %d", ps[i-1].Line, ps[i].Line)
		}
	}
	if got := err.Error(); got != wantText {
		t.Errorf("Error() =\n%s\nwant\n%s", got, wantText)
	}
}

func TestProblemErrorFormat(t *testing.T) {
	cases := []struct {
		p    Problem
		want string
	}{
		{Problem{File: "a.toml", Line: 7, Key: "server.http_addr", Msg: "bad"}, "a.toml:7: server.http_addr: bad"},
		{Problem{File: "a.toml", Line: 3, Col: 12, Msg: "syntax: oops"}, "a.toml:3:12: syntax: oops"},
		{Problem{File: "a.toml", Line: 1, Msg: "toml: something"}, "a.toml:1: toml: something"},
	}
	for _, c := range cases {
		if got := c.p.Error(); got != c.want {
			t.Errorf("Error() = %q, want %q", got, c.want)
		}
	}
	ps := Problems{cases[0].p, cases[1].p}
	if got, want := ps.Error(), cases[0].want+"\n"+cases[1].want; got != want {
		t.Errorf("Problems.Error() = %q, want %q", got, want)
	}
}

func TestParseSyntaxErrorHasLineAndColumn(t *testing.T) {
	cases := []struct {
		name string
		src  string
		line int
	}{
		{"unterminated string", doc(`[server]`, `http_addr = ":80"`, `admin_addr = "127.0.0.1:9090`, `[log]`), 3},
		{"duplicate key", doc(`[server]`, `http_addr = ":80"`, `http_addr = ":81"`), 3},
		{"bare value", doc(`[log]`, `level = "info"`, ``, `[server]`, `http_addr = :80`), 5},
		{"missing value", doc(`[server]`, `http_addr =`), 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The parser's own position, to compare with.
			var pe toml.ParseError
			if _, err := toml.Decode(c.src, new(map[string]any)); !errors.As(err, &pe) {
				t.Fatalf("toml.Decode error = %v, want a ParseError", err)
			}
			_, err := Parse([]byte(c.src), "test.toml")
			ps := problemsOf(t, err)
			if len(ps) != 1 {
				t.Fatalf("got %d problems, want 1:\n%v", len(ps), ps)
			}
			p := ps[0]
			if p.Line != c.line || p.Line != pe.Position.Line || p.Col != pe.Position.Col || p.Col < 1 || p.Key != "" {
				t.Errorf("problem = %+v, want line %d (parser: %d) col %d, no key", p, c.line, pe.Position.Line, pe.Position.Col)
			}
			if want := fmt.Sprintf("test.toml:%d:%d: syntax: %s", p.Line, p.Col, pe.Message); err.Error() != want {
				t.Errorf("Error() = %q, want %q", err.Error(), want)
			}
		})
	}
}

func TestParseTypeMismatchHasLineAndKey(t *testing.T) {
	src := doc(okPool[0], okPool[1], `retries = "two"`, okRoute[0], okRoute[1])
	_, err := Parse([]byte(src), "test.toml")
	ps := problemsOf(t, err)
	if diff := checkProblems(ps, []want{{3, "pools.app.retries", "string"}}); diff != "" {
		t.Error(diff)
	}
}

func TestRouteNames(t *testing.T) {
	cfg := parseOK(t, doc(
		`[pools.app]`,
		`backends = [{ url = "http://10.0.0.1:8080" }]`,
		`[[routes]]`,
		`host = "App.Example.com"`,
		`path_prefix = "/api"`,
		`pool = "app"`,
		`[[routes]]`,
		`name = "web"`,
		`pool = "app"`,
	))
	if got, want := cfg.Routes[0].Name, "app.example.com/api"; got != want {
		t.Errorf("derived name = %q, want %q", got, want)
	}
	if got, want := cfg.Routes[1].Name, "web"; got != want {
		t.Errorf("explicit name = %q, want %q", got, want)
	}
}

var routeNameCases = []problemCase{
	{name: "route name with a space", lines: lines(okPool, ls(`[[routes]]`, `name = "my route"`, `pool = "app"`)),
		want: []want{{4, "routes[0].name", "use letters, digits"}}},
	{name: "route name twice", lines: lines(okPool,
		ls(`[[routes]]`, `name = "web"`, `pool = "app"`),
		ls(`[[routes]]`, `name = "web"`, `path_prefix = "/x"`, `pool = "app"`)),
		want: []want{{7, "routes[1].name", "route names must be unique"}}},
	{name: "explicit name equal to a derived one", lines: lines(okPool,
		ls(`[[routes]]`, `pool = "app"`),
		ls(`[[routes]]`, `name = "/"`, `path_prefix = "/x"`, `pool = "app"`)),
		want: []want{{6, "routes[1].name", "route names must be unique"}}},
}

func TestRouteNameProblems(t *testing.T) { runProblemCases(t, routeNameCases) }
