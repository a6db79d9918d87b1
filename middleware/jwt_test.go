package middleware_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestJWT(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	keyFile := writeFile(t, "pub.pem", string(pubPEM))
	const secret = "0123456789abcdef0123456789abcdef"
	s := start(t, `
[middlewares.rs]
type = "jwt"
public_key_file = "`+keyFile+`"
algorithms = ["RS256"]
issuer = "https://idp.example"
audience = "api"
claims_to_headers = { sub = "X-User", roles = "X-Roles" }
[middlewares.hs]
type = "jwt"
secret = "`+secret+`"
algorithms = ["HS256"]
[[routes]]
pool = "p"
path_prefix = "/rs"
middlewares = ["rs"]
[[routes]]
pool = "p"
path_prefix = "/hs"
middlewares = ["hs"]
`)
	now := time.Now()
	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "dave", "iss": "https://idp.example", "aud": "api", "exp": now.Add(time.Hour).Unix(),
			"roles": []any{"admin", "ops"}}
		if edit != nil {
			edit(c)
		}
		return c
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, token string
		want              int
	}{
		{"valid RS256", "/rs", sign(t, jwt.SigningMethodRS256, priv, claims(nil), ""), 200},
		{"expired within leeway", "/rs", sign(t, jwt.SigningMethodRS256, priv, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-10 * time.Second).Unix() }), ""), 200},
		{"expired", "/rs", sign(t, jwt.SigningMethodRS256, priv, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() }), ""), 401},
		{"not yet valid", "/rs", sign(t, jwt.SigningMethodRS256, priv, claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() }), ""), 401},
		{"wrong audience", "/rs", sign(t, jwt.SigningMethodRS256, priv, claims(func(c jwt.MapClaims) { c["aud"] = "other" }), ""), 401},
		{"wrong issuer", "/rs", sign(t, jwt.SigningMethodRS256, priv, claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }), ""), 401},
		{"alg none", "/rs", none, 401},
		// The classic confusion attack: HS256 with the public key as secret.
		{"HS256 keyed with the RSA public key", "/rs", sign(t, jwt.SigningMethodHS256, pubPEM, claims(nil), ""), 401},
		{"HS256 keyed with the public key DER", "/rs", sign(t, jwt.SigningMethodHS256, der, claims(nil), ""), 401},
		{"RS256 not allowed on the HS route", "/hs", sign(t, jwt.SigningMethodRS256, priv, claims(nil), ""), 401},
		{"valid HS256", "/hs", sign(t, jwt.SigningMethodHS256, []byte(secret), claims(nil), ""), 200},
		{"HS256 wrong secret", "/hs", sign(t, jwt.SigningMethodHS256, []byte(secret+"x"), claims(nil), ""), 401},
		{"garbage", "/rs", "a.b.c", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := get(t, s.URL+tc.path, "Authorization: Bearer "+tc.token, "X-User: forged", "X-Roles: forged")
			s.expect(t, res, body, tc.want, tc.want == 200)
			if tc.want == 401 && res.Header.Get("Www-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	// Mapped headers come from the token only: a forged one is removed even
	// when the token lacks the claim.
	res, body := get(t, s.URL+"/rs", "Authorization: Bearer "+sign(t, jwt.SigningMethodRS256, priv, claims(func(c jwt.MapClaims) { delete(c, "roles") }), ""), "X-User: forged", "X-Roles: forged")
	s.expect(t, res, body, 200, true)
	be := s.be.lastRequest().Header
	if be.Get("X-User") != "dave" || be.Values("X-Roles") != nil {
		t.Errorf("backend got X-User %q X-Roles %q; want dave and none (the claim is absent, the forged header removed)", be.Get("X-User"), be.Values("X-Roles"))
	}
	res, _ = get(t, s.URL+"/rs", "Authorization: Bearer "+sign(t, jwt.SigningMethodRS256, priv, claims(nil), ""))
	if got := s.be.lastRequest().Header.Get("X-Roles"); res.StatusCode != 200 || got != "admin, ops" {
		t.Errorf("X-Roles = %q, want \"admin, ops\"", got)
	}
	if res, _ := get(t, s.URL+"/rs"); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token: %d", res.StatusCode)
	}
}
