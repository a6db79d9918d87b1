package config

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The header an authenticating middleware tells the backend who called in,
// unless user_header says otherwise.
const DefaultUserHeader = "X-User"

// BasicAuth is type "basic_auth": HTTP Basic authentication against bcrypt
// hashes.
type BasicAuth struct {
	Users      map[string]string `toml:"users" secret:"true"` // user -> bcrypt hash
	Realm      string            `toml:"realm"`
	UserHeader string            `toml:"user_header"` // "" sends none
}

// DefaultRealm is the realm a basic_auth challenge names.
const DefaultRealm = "Restricted"

func (o *BasicAuth) defaults(defined func(string) bool) {
	if !defined("realm") {
		o.Realm = DefaultRealm
	}
	if !defined("user_header") {
		o.UserHeader = DefaultUserHeader
	}
}

func (o *BasicAuth) validate(v *validator, key string) {
	if len(o.Users) == 0 {
		v.add(key+".users", "list at least one user, as users = { alice = \"$2y$10$...\" } (a bcrypt hash, e.g. from htpasswd -nbB)")
	}
	for _, u := range sortedKeys(o.Users) {
		k := key + ".users." + u
		if u == "" || strings.ContainsAny(u, ":\r\n") {
			v.add(k, "a user name cannot be empty or contain ':'")
		}
		// Never echo the value: it is a password hash.
		if _, err := bcrypt.Cost([]byte(o.Users[u])); err != nil {
			v.add(k, "not a bcrypt hash (want \"$2y$...\", e.g. from htpasswd -nbB); plain passwords are not accepted")
		}
	}
	if strings.ContainsAny(o.Realm, "\"\\\r\n") {
		v.add(key+".realm", "cannot contain quotes, backslashes or line breaks")
	}
	o.UserHeader = v.optionalHeader(key+".user_header", o.UserHeader)
}

// optionalHeader checks a header name that may be left empty and returns
// it in canonical form: the request's header map is keyed so, and a name
// in another case would sit beside the client's copy instead of replacing it.
func (v *validator) optionalHeader(key, name string) string {
	if name == "" {
		return ""
	}
	v.headerName(key, name)
	return http.CanonicalHeaderKey(name)
}

// APIKey is type "api_key": a key, known by its SHA-256, per caller.
type APIKey struct {
	Keys       map[string]string `toml:"keys" secret:"true"` // name -> "sha256:<hex>"
	Header     string            `toml:"header"`
	UserHeader string            `toml:"user_header"`

	// Digests is Keys decoded, sorted by name.
	Digests []KeyDigest `toml:"-"`
}

// KeyDigest is one named key's SHA-256.
type KeyDigest struct {
	Name   string
	SHA256 [32]byte
}

// DefaultAPIKeyHeader is where api_key looks first.
const DefaultAPIKeyHeader = "X-API-Key"

func (o *APIKey) defaults(defined func(string) bool) {
	if o.Header == "" {
		o.Header = DefaultAPIKeyHeader
	}
	if !defined("user_header") {
		o.UserHeader = DefaultUserHeader
	}
}

func (o *APIKey) validate(v *validator, key string) {
	if len(o.Keys) == 0 {
		v.add(key+".keys", "list at least one key, as keys = { ci = \"sha256:<hex>\" } (printf %%s KEY | sha256sum)")
	}
	o.Digests = o.Digests[:0]
	byDigest := map[[32]byte]string{}
	for _, name := range sortedKeys(o.Keys) {
		k := key + ".keys." + name
		hexSum, ok := strings.CutPrefix(o.Keys[name], "sha256:")
		var d KeyDigest
		if n, err := hex.Decode(d.SHA256[:], []byte(hexSum)); !ok || err != nil || n != 32 || len(hexSum) != 64 {
			v.add(k, "want \"sha256:\" and 64 hex digits, the SHA-256 of the key (printf %%s KEY | sha256sum)")
			continue
		}
		if other, dup := byDigest[d.SHA256]; dup {
			v.add(k, "same key as %q: each name needs its own key", other)
			continue
		}
		byDigest[d.SHA256] = name
		d.Name = name
		o.Digests = append(o.Digests, d)
	}
	v.headerName(key+".header", o.Header)
	o.Header = http.CanonicalHeaderKey(o.Header)
	o.UserHeader = v.optionalHeader(key+".user_header", o.UserHeader)
}

// JWT is type "jwt": Bearer tokens verified with one kind of key.
type JWT struct {
	Secret          string            `toml:"secret"`
	PublicKeyFile   string            `toml:"public_key_file"`
	JWKSURL         string            `toml:"jwks_url"`
	JWKSRefresh     Duration          `toml:"jwks_refresh"`
	Algorithms      []string          `toml:"algorithms"`
	Issuer          string            `toml:"issuer"`
	Audience        string            `toml:"audience"`
	Leeway          Duration          `toml:"leeway"`
	ClaimsToHeaders map[string]string `toml:"claims_to_headers"`

	// PublicKey is public_key_file's key, read by validation.
	PublicKey crypto.PublicKey `toml:"-"`
}

// JWT defaults.
const (
	DefaultJWKSRefresh = 15 * time.Minute
	DefaultJWTLeeway   = 30 * time.Second
	minJWKSRefresh     = time.Minute
	minHMACSecret      = 32 // bytes: RFC 7518 asks for at least the hash size
)

// Algorithm families: which key kind verifies which algorithm.
var (
	hmacAlgs    = []string{"HS256", "HS384", "HS512"}
	rsaAlgs     = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	ecdsaAlgs   = []string{"ES256", "ES384", "ES512"}
	ed25519Algs = []string{"EdDSA"}
)

func (o *JWT) defaults(func(string) bool) {
	o.JWKSRefresh.orDefault(DefaultJWKSRefresh)
	o.Leeway.orDefault(DefaultJWTLeeway)
}

func (o *JWT) validate(v *validator, key string) {
	sources := 0
	for _, s := range []string{o.Secret, o.PublicKeyFile, o.JWKSURL} {
		if s != "" {
			sources++
		}
	}
	if sources != 1 {
		v.add(key, "set exactly one of secret, public_key_file or jwks_url")
	}
	// What the configured key can verify; an algorithm outside it is an
	// error, so that an HS token is never checked against a public key.
	var allowed []string
	switch {
	case o.Secret != "":
		allowed = hmacAlgs
		if len(o.Secret) < minHMACSecret {
			v.warn(key+".secret", "shorter than %d bytes: easy to guess by brute force", minHMACSecret)
		}
	case o.PublicKeyFile != "":
		o.PublicKey, allowed = v.publicKey(key+".public_key_file", o.PublicKeyFile)
	case o.JWKSURL != "":
		allowed = append(append(append([]string{}, rsaAlgs...), ecdsaAlgs...), ed25519Algs...)
		if u, err := url.Parse(o.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			v.add(key+".jwks_url", "%s: want an http(s) URL", urlText(o.JWKSURL))
		}
		v.durationMin(key+".jwks_refresh", o.JWKSRefresh, minJWKSRefresh)
	}
	if len(o.Algorithms) == 0 {
		v.add(key+".algorithms", "missing: list the algorithms tokens may use, such as [\"RS256\"]")
	}
	for i, a := range o.Algorithms {
		k := key + ".algorithms[" + strconv.Itoa(i) + "]"
		switch {
		case strings.EqualFold(a, "none"):
			v.add(k, "\"none\" means unsigned tokens and is never accepted")
		case !contains(hmacAlgs, a) && !contains(rsaAlgs, a) && !contains(ecdsaAlgs, a) && !contains(ed25519Algs, a):
			v.add(k, "unknown algorithm %q", a)
		case allowed != nil && !contains(allowed, a):
			v.add(k, "%q cannot be verified with this key: it takes %s", a, strings.Join(allowed, ", "))
		}
	}
	v.duration(key+".leeway", o.Leeway)
	for _, c := range sortedKeys(o.ClaimsToHeaders) {
		v.headerName(key+".claims_to_headers."+c, o.ClaimsToHeaders[c])
	}
}

// publicKey reads a PEM public key (or certificate) and returns it with the
// algorithms it verifies.
func (v *validator) publicKey(key, file string) (crypto.PublicKey, []string) {
	data, err := os.ReadFile(file)
	if err != nil {
		v.add(key, "cannot read: %v", unwrapPath(err))
		return nil, nil
	}
	block, _ := pem.Decode(data)
	if block == nil {
		v.add(key, "%q holds no PEM block", file)
		return nil, nil
	}
	var pub any
	switch block.Type {
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			pub = cert.PublicKey
		}
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	}
	if err != nil {
		v.add(key, "%q: not a public key: %v", file, err)
		return nil, nil
	}
	switch pub.(type) {
	case *rsa.PublicKey:
		return pub, rsaAlgs
	case *ecdsa.PublicKey:
		return pub, ecdsaAlgs
	case ed25519.PublicKey:
		return pub, ed25519Algs
	}
	v.add(key, "%q: unsupported key type %T: want RSA, ECDSA or Ed25519", file, pub)
	return nil, nil
}

// ForwardAuth is type "forward_auth": an auth service decides.
type ForwardAuth struct {
	URL             string   `toml:"url"`
	Timeout         Duration `toml:"timeout"`
	RequestHeaders  []string `toml:"request_headers"`
	ResponseHeaders []string `toml:"response_headers"`
}

// DefaultForwardAuthTimeout bounds one call to the auth service.
const DefaultForwardAuthTimeout = 5 * time.Second

func (o *ForwardAuth) defaults(func(string) bool) {
	o.Timeout.orDefault(DefaultForwardAuthTimeout)
}

func (o *ForwardAuth) validate(v *validator, key string) {
	if u, err := url.Parse(o.URL); o.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add(key+".url", "%s: want the http(s) URL of the auth service, such as \"http://127.0.0.1:9091/verify\"", urlText(o.URL))
	}
	v.positive(key+".timeout", o.Timeout)
	for name, list := range map[string][]string{"request_headers": o.RequestHeaders, "response_headers": o.ResponseHeaders} {
		for i, h := range list {
			v.headerName(key+"."+name+"["+strconv.Itoa(i)+"]", h)
		}
	}
}

// urlText quotes a URL for a problem without its password, which a
// problem must not show: problems are printed, logged and returned by the
// admin API.
func urlText(s string) string {
	if u, err := url.Parse(s); err == nil {
		return strconv.Quote(u.Redacted())
	}
	if strings.Contains(s, "@") {
		return "(a URL that cannot be parsed)"
	}
	return strconv.Quote(s)
}
