package middleware

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"hash"
	"net/http"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/portico/portico/config"
	"github.com/portico/portico/reqinfo"
)

// basicAuth is type "basic_auth". bcrypt is slow by design (tens of
// milliseconds), so a successful check is remembered for a few minutes,
// keyed by an HMAC of user and password under a key made at start and never
// stored: the cache never holds a password, nor anything that could be
// checked against one offline. Failures are not remembered, so a wrong
// guess always pays bcrypt.
type basicAuth struct {
	users      map[string][]byte
	challenge  []string // WWW-Authenticate
	userHeader string
	cache      *authCache
	compare    func(hash, password []byte) error // bcrypt; tests count calls
	rejected   Counter
	// dummy is checked for unknown users, at the cost of the configured
	// hashes, so that a wrong user name takes as long as a wrong password
	// and user names cannot be probed by timing. Made on first use: it
	// costs as much as a login.
	dummy func() []byte
}

func newBasicAuth(name string, o *config.BasicAuth, env Env, prior any) (Middleware, any, error) {
	c, _ := prior.(*authCache)
	if c == nil {
		c = newAuthCache(authCacheSize, authCacheTTL, env.now)
	}
	users := make(map[string][]byte, len(o.Users))
	cost := bcrypt.MinCost
	for u, h := range o.Users {
		users[u] = []byte(h)
		if c, err := bcrypt.Cost([]byte(h)); err == nil && c > cost {
			cost = c
		}
	}
	return &basicAuth{
		users:      users,
		challenge:  []string{`Basic realm="` + o.Realm + `", charset="UTF-8"`},
		userHeader: o.UserHeader,
		cache:      c,
		compare:    bcrypt.CompareHashAndPassword,
		rejected:   env.counter(name, ReasonUnauthorized),
		dummy: sync.OnceValue(func() []byte {
			h, _ := bcrypt.GenerateFromPassword([]byte("portico"), cost)
			return h
		}),
	}, c, nil
}

func (a *basicAuth) check(user, password string) bool {
	if a.cache.hit(user, password) {
		return true
	}
	hash, known := a.users[user]
	if !known {
		_ = a.compare(a.dummy(), []byte(password))
		return false
	}
	if a.compare(hash, []byte(password)) != nil {
		return false
	}
	a.cache.add(user, password)
	return true
}

func (a *basicAuth) Wrap(next http.Handler, _ string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, password, ok := r.BasicAuth()
		if !ok || !a.check(user, password) {
			a.rejected.Inc()
			w.Header()["Www-Authenticate"] = a.challenge
			refuse(w, http.StatusUnauthorized, "unauthorized")
			return
		}
		// The password stays here: the backend gets the user, not the
		// credentials.
		delete(r.Header, "Authorization")
		setIdentity(r, a.userHeader, user)
		next.ServeHTTP(w, r)
	})
}

// setIdentity records who the request is from and, if a header is
// configured, tells the backend in it, replacing whatever the client sent.
func setIdentity(r *http.Request, header, user string) {
	if info := reqinfo.From(r.Context()); info != nil {
		info.User = user
	}
	if header != "" {
		setHeader(r.Header, header, user)
	}
}

// Bounds of basic_auth's cache of successful checks.
const (
	authCacheSize = 10_000
	authCacheTTL  = 5 * time.Minute
)

// authCache remembers successful checks by HMAC-SHA256(user, password).
type authCache struct {
	now     func() time.Time
	ttl     time.Duration
	size    int
	macs    sync.Pool // of *macState keyed with the process's key
	mu      sync.Mutex
	entries map[[sha256.Size]byte]time.Time // -> expiry
}

func newAuthCache(size int, ttl time.Duration, now func() time.Time) *authCache {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails on supported platforms
	c := &authCache{now: now, ttl: ttl, size: size, entries: map[[sha256.Size]byte]time.Time{}}
	c.macs.New = func() any { return &macState{h: hmac.New(sha256.New, key)} }
	return c
}

// macState is a keyed HMAC and the buffer its input is put together in,
// reused so that a cache lookup allocates nothing.
type macState struct {
	h   hash.Hash
	buf []byte
}

func (c *authCache) sum(user, password string) (out [sha256.Size]byte) {
	m := c.macs.Get().(*macState)
	// A separator that cannot be in a user name: "ab"+"c" and "a"+"bc" differ.
	m.buf = append(append(append(m.buf[:0], user...), 0), password...)
	m.h.Reset()
	_, _ = m.h.Write(m.buf)
	m.h.Sum(out[:0])
	clear(m.buf) // the password does not linger in the pool
	c.macs.Put(m)
	return out
}

func (c *authCache) hit(user, password string) bool {
	k := c.sum(user, password)
	now := c.now()
	c.mu.Lock()
	exp, ok := c.entries[k]
	if ok && !now.Before(exp) {
		delete(c.entries, k)
		ok = false
	}
	c.mu.Unlock()
	return ok
}

func (c *authCache) add(user, password string) {
	k := c.sum(user, password)
	now := c.now()
	c.mu.Lock()
	if len(c.entries) >= c.size {
		// Full: among a few entries (map order is random), drop the
		// expired ones and the one expiring first; that user pays bcrypt
		// once more.
		var first [sha256.Size]byte
		var firstExp time.Time
		n := 0
		for key, exp := range c.entries {
			if !now.Before(exp) {
				delete(c.entries, key)
			} else if n == 0 || exp.Before(firstExp) {
				first, firstExp = key, exp
			}
			if n++; n == 16 {
				break
			}
		}
		delete(c.entries, first)
	}
	c.entries[k] = now.Add(c.ttl)
	c.mu.Unlock()
}
