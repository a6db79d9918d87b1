package tlsmgr

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme/autocert"
)

// SharedStore keeps ACME state where every instance of a cluster sees it,
// and lets one instance at a time order a certificate (package cluster).
type SharedStore interface {
	autocert.Cache
	// PutIfAbsent stores data under name unless something is there, and
	// reports whether it stored it.
	PutIfAbsent(ctx context.Context, name string, data []byte) (bool, error)
	// TryLock takes the cluster-wide lock of name if it is free. The lock
	// stays taken until release is called, or expires if this process
	// dies.
	TryLock(ctx context.Context, name string) (release func(), ok bool, err error)
}

// Option changes how New builds a Manager.
type Option func(*Manager)

// WithSharedStore keeps ACME state in s instead of the cache directory,
// for tls.acme.storage = "redis". Managers made by Next keep it.
func WithSharedStore(s SharedStore) Option {
	return func(m *Manager) { m.store = s }
}

// readiness is closed once a host's certificate is loaded.
type readiness struct {
	ch   chan struct{}
	once sync.Once
}

func (r *readiness) set() { r.once.Do(func() { close(r.ch) }) }

// sharedPoll is how often an instance waiting for another's order looks
// for the certificate in storage.
const sharedPoll = 500 * time.Millisecond

// accountKeyName is where autocert keeps the ACME account key.
const accountKeyName = "acme_account+key"

// sharedCache is the autocert.Cache of an instance in a cluster. autocert
// itself has no lock: it orders when its cache misses, at the first
// handshake or when its renewal timer fires. So the cache decides who
// orders: a certificate name misses only for the instance that holds the
// name's lock; every other instance waits, then reads what the holder
// stored. Challenge tokens pass through, so whichever instance the CA
// reaches answers.
//
// The lock is taken in one of two places. Manager.getCertificate takes it
// before it asks autocert for a certificate the store lacks (the first
// order), and marks the name active, so that autocert's lookup, made under
// its own mutex, never waits. autocert's renewal timer, on every instance,
// reads a certificate that is due for renewal: Get then takes the lock,
// or waits while another instance holds it and returns what that one
// stored. A holder that crashes loses the lock when it expires, and a
// waiter takes over.
type sharedCache struct {
	store SharedStore
	poll  time.Duration

	mu     sync.Mutex
	active map[string]func() // names this process works on: the lock's release, or nil for a load
	held   atomic.Int32      // locks this process holds
}

// certName reports whether a cache name is a certificate's (not the
// account key, not a challenge token).
func certName(name string) bool {
	return name != accountKeyName && !strings.HasSuffix(name, "+token") && !strings.HasSuffix(name, "+http-01")
}

func (c *sharedCache) Get(ctx context.Context, name string) ([]byte, error) {
	if name == accountKeyName {
		return c.accountKey(ctx)
	}
	data, err := c.store.Get(ctx, name)
	if !certName(name) {
		return data, err
	}
	if err != nil && !errors.Is(err, autocert.ErrCacheMiss) {
		return nil, err
	}
	if holds, ok := c.claim(name); ok {
		// obtain's own lookup: a certificate to load as it is, or the
		// lock is ours and a miss makes autocert order.
		if (!holds && usable(data)) || fresh(data) {
			return data, nil
		}
		return nil, autocert.ErrCacheMiss
	}
	if fresh(data) {
		return data, nil
	}
	// autocert's renewal timer, or a first handshake for an RSA
	// certificate: order under the lock, or wait for whoever holds it.
	data, release, err := c.acquire(ctx, name)
	if err != nil || data != nil {
		return data, err
	}
	c.begin(name, release)
	context.AfterFunc(ctx, func() { c.end(name) })
	return nil, autocert.ErrCacheMiss
}

// Put stores data; a stored certificate ends its order and frees the lock.
func (c *sharedCache) Put(ctx context.Context, name string, data []byte) error {
	err := c.store.Put(ctx, name, data)
	if err == nil && certName(name) {
		c.end(name)
	}
	return err
}

func (c *sharedCache) Delete(ctx context.Context, name string) error {
	return c.store.Delete(ctx, name)
}

// acquire returns a fresh certificate stored under name, or takes name's
// lock and returns its release: the caller orders. It waits while another
// instance holds the lock, until that one stores a certificate or its
// lock is gone.
func (c *sharedCache) acquire(ctx context.Context, name string) ([]byte, func(), error) {
	for {
		release, ok, err := c.store.TryLock(ctx, name)
		if err != nil {
			return nil, nil, err
		}
		// Taken or not, storage may hold what an order just stored.
		data, gerr := c.store.Get(ctx, name)
		if gerr == nil && fresh(data) {
			if ok {
				release()
			}
			return data, nil, nil
		}
		if ok {
			return nil, release, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(c.poll):
		}
	}
}

// begin marks name as being worked on by this process, holding its lock
// if release is not nil; end undoes it, releasing the lock if still held.
func (c *sharedCache) begin(name string, release func()) {
	c.mu.Lock()
	c.active[name] = release
	c.mu.Unlock()
	if release != nil {
		c.held.Add(1)
	}
}

func (c *sharedCache) end(name string) {
	c.mu.Lock()
	release, ok := c.active[name]
	delete(c.active, name)
	c.mu.Unlock()
	if ok && release != nil {
		c.held.Add(-1)
		release()
	}
}

// claim reports whether this process is working on name, and whether it
// holds its lock. A load without the lock is claimed once: autocert looks
// a name up once when it loads it, and its renewal timer, which may fire
// at once for a certificate that is due, must take the lock.
func (c *sharedCache) claim(name string) (holds, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	release, ok := c.active[name]
	if ok && release == nil {
		delete(c.active, name)
	}
	return release != nil, ok
}

// accountKey returns the cluster's one ACME account key, made by whichever
// instance needs it first: several instances never register an account
// each.
func (c *sharedCache) accountKey(ctx context.Context) ([]byte, error) {
	data, err := c.store.Get(ctx, accountKeyName)
	if !errors.Is(err, autocert.ErrCacheMiss) {
		return data, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if _, err := c.store.PutIfAbsent(ctx, accountKeyName, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})); err != nil {
		return nil, err
	}
	return c.store.Get(ctx, accountKeyName) // ours, or the one stored first
}

// leafOf returns the certificate in autocert's cache format: a private key
// block, then the chain, leaf first.
func leafOf(data []byte) *x509.Certificate {
	for rest := data; len(rest) > 0; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return nil
		}
		if b.Type == "CERTIFICATE" {
			leaf, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil
			}
			return leaf
		}
	}
	return nil
}

// usable reports whether data holds a certificate that has not expired.
func usable(data []byte) bool {
	leaf := leafOf(data)
	return leaf != nil && time.Now().Before(leaf.NotAfter)
}

// fresh reports whether data holds a certificate that is not due for
// renewal by autocert's rule (the last third of its lifetime, at most 30
// days), so that a renewal timer adopts it instead of ordering.
func fresh(data []byte) bool {
	leaf := leafOf(data)
	if leaf == nil {
		return false
	}
	threshold := min(leaf.NotAfter.Sub(leaf.NotBefore)/3, 30*24*time.Hour)
	return time.Now().Before(leaf.NotAfter.Add(-threshold))
}

// errNoLock refuses a request to the CA made without the cluster lock.
var errNoLock = errors.New("tlsmgr: not sent to the ACME CA: this instance holds no certificate lock")

// lockedOnly is the ACME client's transport in a cluster: requests that
// change state at the CA (POSTs: new orders, challenges, finalization) go
// out only while this instance holds a certificate lock. autocert's
// renewal timer orders on any cache error, so without this an instance cut
// off from Redis when a renewal falls due would order on its own.
type lockedOnly struct {
	next http.RoundTripper
	held *atomic.Int32
}

func (l lockedOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost && l.held.Load() == 0 {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, errNoLock
	}
	return l.next.RoundTrip(r)
}
