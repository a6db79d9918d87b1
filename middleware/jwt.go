package middleware

import (
	"crypto"
	"errors"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/portico/portico/config"
)

// jwtAuth is type "jwt": "Authorization: Bearer TOKEN" verified with
// golang-jwt. Only the configured algorithms are accepted, and validation
// already ensured each fits the key kind, so "none" never passes and an HS
// token is never checked with a public key used as an HMAC secret. The
// token's subject becomes the request's user; chosen claims go to the
// backend as headers, and the client's own copies of those headers are
// always removed. The Authorization header itself is passed on.
type jwtAuth struct {
	parser   *jwt.Parser
	keyfunc  jwt.Keyfunc
	claims   []claimHeader
	rejected Counter
	log      *slog.Logger
}

type claimHeader struct{ claim, header string }

var (
	errNoKey     = errors.New("no key for this token")
	errAlgFamily = errors.New("algorithm does not fit the key")
)

func newJWT(name string, o *config.JWT, env Env, prior any) (Middleware, any, error) {
	opts := []jwt.ParserOption{jwt.WithValidMethods(o.Algorithms), jwt.WithLeeway(o.Leeway.Duration)}
	if o.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		opts = append(opts, jwt.WithAudience(o.Audience))
	}
	if env.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(env.Now))
	}
	m := &jwtAuth{parser: jwt.NewParser(opts...), rejected: env.counter(name, ReasonUnauthorized), log: env.Log.With("middleware", name)}
	for c, h := range o.ClaimsToHeaders {
		m.claims = append(m.claims, claimHeader{c, http.CanonicalHeaderKey(h)})
	}
	sort.Slice(m.claims, func(i, j int) bool { return m.claims[i].claim < m.claims[j].claim })

	var st any
	switch {
	case o.Secret != "":
		secret := []byte(o.Secret)
		m.keyfunc = func(t *jwt.Token) (any, error) {
			if _, ok := t.Method.(*jwt.SigningMethodHMAC); !ok {
				return nil, errAlgFamily
			}
			return secret, nil
		}
	case o.PublicKey != nil:
		pub := o.PublicKey
		m.keyfunc = func(t *jwt.Token) (any, error) { return checkFamily(t, pub) }
	default:
		ks, _ := prior.(*jwks)
		if ks == nil {
			ks = newJWKS(o.JWKSURL, o.JWKSRefresh.Duration, env.now, env.Log.With("middleware", name))
		}
		st = ks
		m.keyfunc = func(t *jwt.Token) (any, error) {
			kid, _ := t.Header["kid"].(string)
			k, ok := ks.key(kid)
			if !ok {
				return nil, errNoKey
			}
			if k.alg != "" && k.alg != t.Method.Alg() {
				return nil, errAlgFamily
			}
			return checkFamily(t, k.key)
		}
	}
	return m, st, nil
}

// checkFamily refuses a key of another kind than the token's algorithm,
// whatever the library would do with it.
func checkFamily(t *jwt.Token, key crypto.PublicKey) (any, error) {
	if _, hmac := t.Method.(*jwt.SigningMethodHMAC); hmac || key == nil {
		return nil, errAlgFamily
	}
	return key, nil
}

func (m *jwtAuth) Wrap(next http.Handler, _ string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, c := range m.claims {
			delete(r.Header, c.header)
		}
		tok, ok := bearer(r)
		if !ok {
			m.refuse(w, `Bearer`)
			return
		}
		claims := jwt.MapClaims{}
		if _, err := m.parser.ParseWithClaims(tok, claims, m.keyfunc); err != nil {
			// The reason, never the token.
			m.log.Debug("token refused", "request_id", requestIDOf(r), "reason", err.Error())
			m.refuse(w, `Bearer error="invalid_token"`)
			return
		}
		sub, _ := claims.GetSubject()
		setIdentity(r, "", sub)
		for _, c := range m.claims {
			if v, ok := claimString(claims[c.claim]); ok {
				setHeader(r.Header, c.header, v)
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (m *jwtAuth) refuse(w http.ResponseWriter, challenge string) {
	m.rejected.Inc()
	w.Header().Set("Www-Authenticate", challenge)
	refuse(w, http.StatusUnauthorized, "unauthorized")
}

// claimString renders a claim as a header value: strings as they are,
// numbers and booleans in JSON notation, lists of those joined by ", ".
// Anything else (objects) is not sent.
func claimString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, !strings.ContainsAny(x, "\r\n\x00")
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(x), true
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := claimString(e)
			if !ok {
				return "", false
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ", "), true
	}
	return "", false
}
