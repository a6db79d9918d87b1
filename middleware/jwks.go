package middleware

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// jwks is a JSON Web Key Set fetched from a URL: at start, then every
// refresh interval, and again when a token names a key it does not hold (a
// signer that rotated its keys), but at most once a minute, so that tokens
// with made-up key IDs cannot turn Portico into a flood against the
// identity provider. A failed fetch keeps the keys it had.
type jwks struct {
	url     string
	shown   string // url without its password, for the log
	client  *http.Client
	now     func() time.Time
	log     *slog.Logger
	keys    atomic.Pointer[map[string]jwk]
	mu      sync.Mutex // one fetch at a time
	last    time.Time  // last fetch attempt, under mu
	stop    chan struct{}
	stopped sync.WaitGroup
}

type jwk struct {
	key crypto.PublicKey
	alg string // "" when the set does not say
}

const (
	jwksTimeout    = 10 * time.Second
	jwksMinRefetch = time.Minute
	jwksMaxBytes   = 1 << 20
)

func newJWKS(url string, refresh time.Duration, now func() time.Time, log *slog.Logger) *jwks {
	j := &jwks{
		url:    url,
		shown:  shownURL(url),
		client: &http.Client{Timeout: jwksTimeout},
		now:    now,
		log:    log,
		stop:   make(chan struct{}),
	}
	j.keys.Store(&map[string]jwk{})
	j.mu.Lock()
	j.fetch()
	j.mu.Unlock()
	j.stopped.Go(func() {
		t := time.NewTicker(refresh)
		defer t.Stop()
		for {
			select {
			case <-j.stop:
				return
			case <-t.C:
				j.mu.Lock()
				j.fetch()
				j.mu.Unlock()
			}
		}
	})
	return j
}

func (j *jwks) close() {
	close(j.stop)
	j.stopped.Wait()
	j.client.CloseIdleConnections()
}

// key finds the key a token names. Without a kid, a set of one key is
// unambiguous.
func (j *jwks) key(kid string) (jwk, bool) {
	if k, ok := lookupKey(*j.keys.Load(), kid); ok {
		return k, true
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if k, ok := lookupKey(*j.keys.Load(), kid); ok { // fetched while we waited
		return k, true
	}
	if j.now().Sub(j.last) < jwksMinRefetch {
		return jwk{}, false
	}
	j.fetch()
	return lookupKey(*j.keys.Load(), kid)
}

func lookupKey(keys map[string]jwk, kid string) (jwk, bool) {
	if kid == "" && len(keys) == 1 {
		for _, k := range keys {
			return k, true
		}
	}
	k, ok := keys[kid]
	return k, ok
}

// fetch replaces the key set; the caller holds mu.
func (j *jwks) fetch() {
	j.last = j.now()
	keys, err := j.get()
	if err != nil {
		j.log.Warn("fetching JWKS failed; keeping the keys held", "url", j.shown, "keys", len(*j.keys.Load()), "err", err)
		return
	}
	j.keys.Store(&keys)
	j.log.Debug("JWKS fetched", "url", j.shown, "keys", len(keys))
}

func (j *jwks) get() (map[string]jwk, error) {
	ctx, cancel := context.WithTimeout(context.Background(), jwksTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	res, err := j.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", res.StatusCode)
	}
	return parseJWKS(io.LimitReader(res.Body, jwksMaxBytes))
}

// rawJWK holds the members of RFC 7517/7518/8037 keys Portico uses.
type rawJWK struct {
	Kty, Kid, Alg, Use, Crv string
	N, E, X, Y              string
}

// parseJWKS reads the signature keys of a set; keys of other uses or
// unknown kinds are skipped, as RFC 7517 asks.
func parseJWKS(r io.Reader) (map[string]jwk, error) {
	var set struct{ Keys []rawJWK }
	if err := json.NewDecoder(r).Decode(&set); err != nil {
		return nil, fmt.Errorf("not a JWK set: %w", err)
	}
	keys := make(map[string]jwk, len(set.Keys))
	for _, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pub, err := k.publicKey()
		if err != nil {
			continue
		}
		keys[k.Kid] = jwk{key: pub, alg: k.Alg}
	}
	if len(keys) == 0 {
		return nil, errors.New("the set holds no usable signature key")
	}
	return keys, nil
}

func b64(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }

func (k *rawJWK) publicKey() (crypto.PublicKey, error) {
	switch k.Kty {
	case "RSA":
		n, err1 := b64(k.N)
		e, err2 := b64(k.E)
		if err1 != nil || err2 != nil || len(e) > 4 {
			return nil, errors.New("bad RSA key")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
	case "EC":
		curve, size := map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521()}[k.Crv], 0
		if curve == nil {
			return nil, errors.New("unknown curve")
		}
		size = (curve.Params().BitSize + 7) / 8
		x, err1 := b64(k.X)
		y, err2 := b64(k.Y)
		if err1 != nil || err2 != nil || len(x) != size || len(y) != size {
			return nil, errors.New("bad EC key")
		}
		return ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
	case "OKP":
		x, err := b64(k.X)
		if k.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("bad OKP key")
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, errors.New("unknown key type")
}
