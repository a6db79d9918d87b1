package middleware

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/portico/portico/config"
)

// apiKey is type "api_key": the key comes in its header or as
// "Authorization: Bearer KEY"; only its SHA-256 is configured. Every
// configured digest is compared, in constant time, so neither the match nor
// its position shows in the timing. The key is removed before forwarding.
type apiKey struct {
	keys       []config.KeyDigest
	header     string
	userHeader string
	challenge  []string
	rejected   Counter
}

func newAPIKey(name string, o *config.APIKey, env Env) Middleware {
	return &apiKey{
		keys:       o.Digests,
		header:     o.Header,
		userHeader: o.UserHeader,
		challenge:  []string{`Bearer realm="` + name + `"`},
		rejected:   env.counter(name, ReasonUnauthorized),
	}
}

// presented returns the key the client sent, and the header it came in.
func (a *apiKey) presented(r *http.Request) (key, header string) {
	if v := r.Header[a.header]; len(v) > 0 {
		return v[0], a.header
	}
	if tok, ok := bearer(r); ok {
		return tok, "Authorization"
	}
	return "", ""
}

// bearer returns the token of "Authorization: Bearer TOKEN".
func bearer(r *http.Request) (string, bool) {
	v := r.Header["Authorization"]
	if len(v) == 0 || len(v[0]) < 7 || !strings.EqualFold(v[0][:7], "Bearer ") {
		return "", false
	}
	tok := strings.TrimSpace(v[0][7:])
	return tok, tok != ""
}

func (a *apiKey) match(key string) (string, bool) {
	var sum [sha256.Size]byte
	var buf [128]byte // keys of usual length are hashed without a heap copy
	if len(key) <= len(buf) {
		n := copy(buf[:], key)
		sum = sha256.Sum256(buf[:n])
	} else {
		sum = sha256.Sum256([]byte(key))
	}
	name, found := "", 0
	for i := range a.keys {
		if subtle.ConstantTimeCompare(sum[:], a.keys[i].SHA256[:]) == 1 {
			name, found = a.keys[i].Name, 1
		}
	}
	return name, found == 1
}

func (a *apiKey) Wrap(next http.Handler, _ string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, from := a.presented(r)
		name, ok := a.match(key)
		if key == "" || !ok {
			a.rejected.Inc()
			w.Header()["Www-Authenticate"] = a.challenge
			refuse(w, http.StatusUnauthorized, "unauthorized")
			return
		}
		delete(r.Header, from)
		setIdentity(r, a.userHeader, name)
		next.ServeHTTP(w, r)
	})
}
