package middleware

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/portico/portico/reqinfo"
)

// nopWriter is a ResponseWriter that costs nothing, so that a benchmark
// measures the middleware alone.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) WriteHeader(int)             {}
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }

var nop = http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})

// benchAccept measures one middleware's accept path: prepare sets up the
// request headers a client would send each time.
func benchAccept(b *testing.B, doc string, prepare func(h http.Header)) {
	b.Helper()
	_, m := buildOneB(b, doc)
	h := m.Wrap(nop, "r")
	req, _ := http.NewRequest("GET", "http://app.example/api/x?q=1", nil)
	req.RemoteAddr = "192.0.2.1:1234"
	ctx, info := reqinfo.NewContext(req.Context())
	req = req.WithContext(ctx)
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		*info = reqinfo.Info{Start: time.Now(), ClientIP: netip.AddrFrom4([4]byte{192, 0, 2, 1}), Route: "r"}
		clear(req.Header)
		clear(w.h)
		if prepare != nil {
			prepare(req.Header)
		}
		h.ServeHTTP(w, req)
		if w.h.Get("Www-Authenticate") != "" || w.h.Get("Retry-After") != "" {
			b.Fatal("refused")
		}
	}
}

func buildOneB(b *testing.B, doc string) (*Set, Middleware) {
	t := &testing.T{}
	s, m := buildOne(t, doc, Env{})
	if t.Failed() || m == nil {
		b.Fatal("build failed")
	}
	return s, m
}

func BenchmarkAccept(b *testing.B) {
	keyFile, token := benchES256(b)
	for _, bc := range []struct {
		name, doc string
		prepare   func(http.Header)
	}{
		{"request_id", `type = "request_id"`, nil},
		{"headers_fixed", `type = "headers"
request_set = { X-A = "1" }
response_set = { Strict-Transport-Security = "max-age=1" }`, nil},
		{"basic_auth_cached", `type = "basic_auth"
users = { alice = "$2a$04$Ls1ZsgTInmKe3Y/s6nh27.wNbxfHzUEeKLIaAUe3CyQIeoM7LVMta" }`,
			set("Authorization", "Basic YWxpY2U6c2VjcmV0")},
		{"api_key", `type = "api_key"
keys = { ci = "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b" }`,
			set("X-Api-Key", "secret")},
		{"jwt_es256", `type = "jwt"
public_key_file = "` + keyFile + `"
algorithms = ["ES256"]`,
			set("Authorization", "Bearer "+token)},
		{"ip_filter", `type = "ip_filter"
allow = ["10.0.0.0/8", "192.0.2.0/24"]
deny = ["198.51.100.0/24"]`, nil},
		{"rate_limit", `type = "rate_limit"
rate = 1000000000
burst = 1000000`, nil},
		{"concurrency_limit_route", `type = "concurrency_limit"
max = 100`, nil},
		{"concurrency_limit_client_ip", `type = "concurrency_limit"
max = 100
key = "client_ip"`, nil},
		{"redirect_no_match", `type = "redirect"
from = '^https?://old\.example/(.*)$'
to = "https://new.example/$1"`, nil},
		{"rewrite", `type = "rewrite"
path_regex = '^/api/'
replacement = "/v2/"`, nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			benchAccept(b, "[middlewares.m]\n"+bc.doc, bc.prepare)
		})
	}
}

// set returns a prepare function that sets a header from a slice made once,
// so that the client's side is not counted.
func set(name, value string) func(http.Header) {
	v := []string{value}
	return func(h http.Header) { h[name] = v }
}

// benchES256 writes a public key file and returns a token it verifies.
func benchES256(b *testing.B) (string, string) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	path := filepath.Join(b.TempDir(), "es.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		b.Fatal(err)
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"sub": "bench", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(k)
	if err != nil {
		b.Fatal(err)
	}
	return path, tok
}
