package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMiddlewareDefaults(t *testing.T) {
	cfg := parseOK(t, doc(lines(ls(
		`[server]`,
		`middlewares = ["rid"]`,
		`[middlewares.rid]`,
		`type = "request_id"`,
		`[middlewares.auth]`,
		`type = "basic_auth"`,
		`users = { alice = "$2a$04$Ls1ZsgTInmKe3Y/s6nh27.wNbxfHzUEeKLIaAUe3CyQIeoM7LVMta" }`,
		`[middlewares.key]`,
		`type = "api_key"`,
		`keys = { ci = "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b" }`,
		`[middlewares.limit]`,
		`type = "rate_limit"`,
		`rate = 2.5`,
		`[middlewares.conc]`,
		`type = "concurrency_limit"`,
		`max = 10`,
		`[middlewares.sso]`,
		`type = "forward_auth"`,
		`url = "http://127.0.0.1:9091/verify"`,
		`[middlewares.jwt]`,
		`type = "jwt"`,
		`jwks_url = "https://idp.example/jwks.json"`,
		`algorithms = ["RS256"]`,
		`[middlewares.moved]`,
		`type = "redirect"`,
		`from = "^http://(.*)$"`,
		`to = "https://$1"`,
		`[middlewares.gz]`,
		`type = "compress"`,
	), okPool, ls(`[[routes]]`, `pool = "app"`, `middlewares = ["auth", "limit"]`))...))
	m := cfg.Middlewares
	rl := m["limit"].Options.(*RateLimit)
	ba := m["auth"].Options.(*BasicAuth)
	ak := m["key"].Options.(*APIKey)
	cl := m["conc"].Options.(*ConcurrencyLimit)
	fa := m["sso"].Options.(*ForwardAuth)
	jw := m["jwt"].Options.(*JWT)
	gz := m["gz"].Options.(*Compress)
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"type", m["limit"].Type, TypeRateLimit},
		{"name", m["limit"].Name, "limit"},
		{"rate", rl.Rate.PerSecond, 2.5},
		{"burst", rl.Burst, 3},
		{"key", rl.Limit, LimitKey{Kind: KeyClientIP}},
		{"max_keys", rl.MaxKeys, 100_000},
		{"realm", ba.Realm, "Restricted"},
		{"basic user_header", ba.UserHeader, "X-User"},
		{"api header", ak.Header, "X-Api-Key"},
		{"digests", len(ak.Digests), 1},
		{"concurrency key", cl.Limit, LimitKey{Kind: KeyRoute}},
		{"queue_timeout", cl.QueueTimeout.Duration, time.Duration(0)},
		{"forward timeout", fa.Timeout.Duration, 5 * time.Second},
		{"jwks_refresh", jw.JWKSRefresh.Duration, 15 * time.Minute},
		{"leeway", jw.Leeway.Duration, 30 * time.Second},
		{"redirect status", m["moved"].Options.(*Redirect).Status, 302},
		{"request id header", m["rid"].Options.(*RequestID).Header, "X-Request-Id"},
		{"min_length", gz.MinLength, 1024},
		{"encodings", len(gz.Encodings), 3},
		{"server chain", len(cfg.Server.Middlewares), 1},
		{"route chain", len(cfg.Routes[0].Middlewares), 2},
		{"access_format", cfg.Log.AccessFormat, "json"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestRateForms(t *testing.T) {
	for in, want := range map[string]float64{`100`: 100, `0.5`: 0.5, `"100/s"`: 100, `"120/m"`: 2, `"3600/h"`: 1} {
		cfg := parseOK(t, doc(tail(`[middlewares.l]`, `type = "rate_limit"`, `rate = `+in)...))
		if got := cfg.Middlewares["l"].Options.(*RateLimit).Rate.PerSecond; got != want {
			t.Errorf("rate = %s: %v per second, want %v", in, got, want)
		}
	}
}

func TestMiddlewareProblems(t *testing.T) { runProblemCases(t, middlewareCases) }

var middlewareCases = []problemCase{
	{name: "unknown and missing type, unknown keys per type, every problem at once",
		lines: tail(
			`[middlewares.a]`,
			`type = "ratelimit"`,
			`rate = 1`,
			`[middlewares.b]`,
			`rate = 1`,
			`[middlewares.c]`,
			`type = "ip_filter"`,
			`allow = ["10.0.0.0/8"]`,
			`rate = 1`,
			`[middlewares.d]`,
			`type = "rate_limit"`,
			`rate = "fast"`,
			`burst = 0`,
			`key = "cookie:x"`,
		),
		want: []want{
			{2, "middlewares.a.type", `unknown type "ratelimit"`},
			{4, "middlewares.b.type", "missing: want one of"},
			{9, "middlewares.c.rate", "unknown key"},
			{12, "middlewares.d.rate", `invalid rate "fast"`},
			{13, "middlewares.d.burst", "must be at least 1"},
			{14, "middlewares.d.key", `unknown key "cookie:x"`},
		}},
	{name: "chains name defined middlewares once",
		lines: lines(ls(
			`[server]`,
			`middlewares = ["rid", "nope"]`,
			`[middlewares.rid]`,
			`type = "request_id"`,
		), okPool, ls(`[[routes]]`, `pool = "app"`, `middlewares = ["rid", "missing"]`)),
		want: []want{
			{2, "server.middlewares[1]", `no middleware named "nope"`},
			{9, "routes[0].middlewares[0]", `"rid" is already in this chain`},
			{9, "routes[0].middlewares[1]", `no middleware named "missing"`},
		}},
	{name: "wrong value type",
		lines: tail(`[middlewares.l]`, `type = "concurrency_limit"`, `max = "ten"`),
		want:  []want{{3, "middlewares.l.max", "incompatible types"}}},
	{name: "auth options",
		lines: tail(
			`[middlewares.b]`,
			`type = "basic_auth"`,
			`users = { alice = "hunter2" }`,
			`[middlewares.k]`,
			`type = "api_key"`,
			`keys = { ci = "plain-key", cd = "sha256:zz" }`,
			`[middlewares.f]`,
			`type = "forward_auth"`,
			`url = "ftp://auth"`,
			`timeout = "0s"`,
		),
		want: []want{
			{3, "middlewares.b.users.alice", "not a bcrypt hash"},
			{6, "middlewares.k.keys.cd", `want "sha256:"`},
			{6, "middlewares.k.keys.ci", `want "sha256:"`},
			{9, "middlewares.f.url", "want the http(s) URL"},
			{10, "middlewares.f.timeout", "must be more than zero"},
		}},
	{name: "jwt: none, key kind mismatch, two sources",
		lines: tail(
			`[middlewares.j]`,
			`type = "jwt"`,
			`secret = "0123456789abcdef0123456789abcdef"`,
			`jwks_url = "https://idp/jwks"`,
			`algorithms = ["none", "RS256", "XX1"]`,
			`[middlewares.k]`,
			`type = "jwt"`,
			`secret = "0123456789abcdef0123456789abcdef"`,
			`algorithms = ["RS256"]`,
		),
		want: []want{
			{1, "middlewares.j", "exactly one of secret, public_key_file or jwks_url"},
			{5, "middlewares.j.algorithms[0]", `"none"`},
			{5, "middlewares.j.algorithms[1]", "cannot be verified with this key"},
			{5, "middlewares.j.algorithms[2]", `unknown algorithm "XX1"`},
			{9, "middlewares.k.algorithms[0]", "cannot be verified with this key"},
		}},
	{name: "headers, redirect, rewrite, compress, ip_filter",
		lines: tail(
			`[middlewares.h]`,
			`type = "headers"`,
			`request_set = { "Bad Name" = "x", X-Ok = "{nope}" }`,
			`[middlewares.r]`,
			`type = "redirect"`,
			`from = "(unclosed"`,
			`to = "https://x/$1"`,
			`status = 303`,
			`[middlewares.w]`,
			`type = "rewrite"`,
			`path_regex = "^/a/(.*)"`,
			`replacement = "/b/$2"`,
			`[middlewares.z]`,
			`type = "compress"`,
			`encodings = ["gzip", "deflate"]`,
			`types = ["text"]`,
			`[middlewares.i]`,
			`type = "ip_filter"`,
			`deny = ["10.0.0.0/33"]`,
		),
		want: []want{
			{3, "middlewares.h.request_set.Bad Name", "not a valid header name"},
			{3, "middlewares.h.request_set.X-Ok", "unknown placeholder {nope}"},
			{6, "middlewares.r.from", "invalid regular expression"},
			{8, "middlewares.r.status", "must be 301, 302, 307 or 308"},
			{12, "middlewares.w.replacement", "$2 refers to a group"},
			{15, "middlewares.z.encodings[1]", `unknown encoding "deflate"`},
			{16, "middlewares.z.types[0]", "not a media type"},
			{19, "middlewares.i.deny[0]", "invalid CIDR"},
		}},
	{name: "access log",
		lines: tail(`[log]`, `access_format = "apache"`, `access_log = "/nonexistent/dir/access.log"`),
		want: []want{
			{2, "log.access_format", `unknown format "apache"`},
			{3, "log.access_log", "does not exist"},
		}},
}

func TestJWTPublicKeyFile(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	path := filepath.Join(t.TempDir(), "es.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := parseOK(t, doc(tail(`[middlewares.j]`, `type = "jwt"`, `public_key_file = "`+path+`"`, `algorithms = ["ES256"]`)...))
	if _, ok := cfg.Middlewares["j"].Options.(*JWT).PublicKey.(*ecdsa.PublicKey); !ok {
		t.Fatal("public key not loaded")
	}
	_, err := Parse([]byte(doc(tail(`[middlewares.j]`, `type = "jwt"`, `public_key_file = "`+path+`"`, `algorithms = ["RS256"]`)...)), "test.toml")
	if diff := checkProblems(problemsOf(t, err), []want{{4, "middlewares.j.algorithms[0]", "it takes ES256, ES384, ES512"}}); diff != "" {
		t.Error(diff)
	}
}

// A URL that is refused is named without its password: problems are
// printed, logged and returned by the admin API.
func TestURLProblemsHidePasswords(t *testing.T) {
	_, err := Parse([]byte(doc(tail(
		`[middlewares.f]`,
		`type = "forward_auth"`,
		`url = "ftp://gate:pw-forward-1@auth/verify"`,
		`[middlewares.j]`,
		`type = "jwt"`,
		`jwks_url = "ftp://idp:pw-jwks-2@idp/jwks.json"`,
		`algorithms = ["RS256"]`,
	)...)), "test.toml")
	ps := problemsOf(t, err)
	if diff := checkProblems(ps, []want{
		{3, "middlewares.f.url", `"ftp://gate:xxxxx@auth/verify": want the http(s) URL`},
		{6, "middlewares.j.jwks_url", `"ftp://idp:xxxxx@idp/jwks.json": want an http(s) URL`},
	}); diff != "" {
		t.Error(diff)
	}
	for _, secret := range []string{"pw-forward-1", "pw-jwks-2"} {
		if strings.Contains(ps.Error(), secret) {
			t.Errorf("problems show the password %s:\n%v", secret, ps)
		}
	}
}
