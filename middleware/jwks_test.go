package middleware

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/portico/portico/internal/testlog"
)

// jwksServer serves a key set that a test can replace, counting fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	set     []byte
	fetches atomic.Int32
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := &jwksServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(s.set)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) serve(keys ...map[string]string) {
	b, _ := json.Marshal(map[string]any{"keys": keys})
	s.mu.Lock()
	s.set = b
	s.mu.Unlock()
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, k *rsa.PublicKey) map[string]string {
	return map[string]string{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64u(k.N.Bytes()), "e": b64u(big.NewInt(int64(k.E)).Bytes())}
}

func ecJWK(kid string, k *ecdsa.PrivateKey) map[string]string {
	raw, _ := k.PublicKey.Bytes() // 0x04 || X || Y
	n := (len(raw) - 1) / 2
	return map[string]string{"kty": "EC", "kid": kid, "crv": "P-256", "x": b64u(raw[1 : 1+n]), "y": b64u(raw[1+n:])}
}

// A signer rotates to a new key: a token with the new kid makes Portico
// fetch the set again, but no more than once a minute, however many
// unknown kids arrive.
func TestJWKSRotation(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	srv := newJWKSServer(t)
	srv.serve(ecJWK("k1", ec))
	c := newClock()
	_, m := buildOne(t, `
[middlewares.m]
type = "jwt"
jwks_url = "`+srv.URL+`"
algorithms = ["ES256", "RS256"]
`, Env{Now: c.Now})
	h := m.Wrap(ok, "r")
	token := func(method jwt.SigningMethod, key any, kid string) int {
		tok := jwt.NewWithClaims(method, jwt.MapClaims{"sub": "erin", "exp": c.Now().Add(time.Hour).Unix()})
		tok.Header["kid"] = kid
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", "Bearer "+s)
		rec, info := serve(h, r, "192.0.2.1")
		if rec.Code == 200 && info.User != "erin" {
			t.Errorf("user %q, want the subject erin", info.User)
		}
		return rec.Code
	}
	steps := []struct {
		advance time.Duration
		method  jwt.SigningMethod
		key     any
		kid     string
		status  int
		fetches int32
	}{
		{0, jwt.SigningMethodES256, ec, "k1", 200, 1},
		{10 * time.Second, jwt.SigningMethodRS256, rk, "k2", 401, 1}, // rotated, but fetched <1 min ago
		{51 * time.Second, jwt.SigningMethodRS256, rk, "k2", 200, 2}, // refetched
		{0, jwt.SigningMethodES256, ec, "k1", 401, 2},                // k1 is gone
		{time.Second, jwt.SigningMethodRS256, rk, "nope", 401, 2},    // made-up kids: no flood
		{time.Second, jwt.SigningMethodRS256, rk, "nope2", 401, 2},
		{0, jwt.SigningMethodRS256, rk, "k2", 200, 2},
	}
	for i, s := range steps {
		if i == 1 {
			srv.serve(rsaJWK("k2", &rk.PublicKey))
		}
		c.Advance(s.advance)
		if got := token(s.method, s.key, s.kid); got != s.status || srv.fetches.Load() != s.fetches {
			t.Fatalf("step %d: status %d, fetches %d; want %d, %d", i, got, srv.fetches.Load(), s.status, s.fetches)
		}
	}
}

func TestParseJWKSSkipsUnusableKeys(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	enc := ecJWK("enc", ec)
	enc["use"] = "enc"
	b, _ := json.Marshal(map[string]any{"keys": []map[string]string{enc, {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"}, ecJWK("sig", ec)}})
	keys, err := parseJWKS(bytes.NewReader(b))
	if err != nil || len(keys) != 1 || keys["sig"].key == nil {
		t.Fatalf("keys %v, err %v; want only the EC signature key", keys, err)
	}
}

// An identity provider's JWKS URL, or an auth service's URL, may carry a
// password (https://user:password@host/...): the log lines about failing
// to reach them name the URL without it.
func TestURLPasswordsStayOutOfTheLog(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	host := strings.TrimPrefix(down.URL, "http://")
	var logs testlog.Buffer
	env := Env{Log: slog.New(slog.NewTextHandler(&logs, nil))}
	buildOne(t, `
[middlewares.m]
type = "jwt"
jwks_url = "http://idp:pw-jwks-0987@`+host+`/jwks.json"
algorithms = ["RS256"]
`, env)
	_, fa := buildOne(t, `
[middlewares.m]
type = "forward_auth"
url = "http://gate:pw-auth-6543@`+host+`/verify"
`, env)
	serve(fa.Wrap(ok, "r"), httptest.NewRequest("GET", "/", nil), "192.0.2.1")
	out := logs.String()
	for _, want := range []string{"fetching JWKS failed", "auth service unavailable", "idp:xxxxx@", "gate:xxxxx@"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	for _, secret := range []string{"pw-jwks-0987", "pw-auth-6543"} {
		if strings.Contains(out, secret) {
			t.Errorf("log shows the password %s:\n%s", secret, out)
		}
	}
}
