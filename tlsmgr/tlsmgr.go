// Package tlsmgr owns the certificates of the HTTPS listener: static
// certificates chosen by SNI, certificates obtained and renewed over ACME
// for an explicit list of hosts, what a client naming any other host gets,
// and when each certificate in use expires.
//
// Through Current it gives cmd a tls.Config for the listener and a handler
// for ACME HTTP-01 challenges on the plain listener, both of which follow
// the Manager in service as reloads replace it (Manager.Next); it
// knows nothing of routes or backends. ACME state (account key,
// certificates) is kept behind autocert.Cache, so that a shared store can
// replace the directory.
package tlsmgr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/portico/portico/config"
)

// CertInfo describes one certificate in use, for logs and metrics.
type CertInfo struct {
	Names    []string // the DNS names it covers
	Source   string   // "static" or "acme"
	NotAfter time.Time
}

// Manager picks the certificate for each TLS handshake.
type Manager struct {
	log      *slog.Logger
	exact    map[string][]*tls.Certificate // by lower-case name
	wildcard map[string][]*tls.Certificate // by the part after "*."
	fallback *tls.Certificate              // for unknown names; nil: handshake failure

	acme  *acmeClient     // nil when ACME is off
	hosts map[string]bool // the only names ACME may order for

	config *tls.Config // what Current.TLSConfig hands each handshake

	// The store of tls.acme.storage = "redis" (WithSharedStore), and per
	// ACME host whether its certificate is loaded: in a cluster,
	// handshakes wait for that rather than start an order of their own.
	store SharedStore
	ready map[string]*readiness

	inUse sync.Map // key string -> CertInfo

	// Retry schedule for certificates that could not be obtained. autocert
	// keeps a failure for a minute before it tries again, so retrying
	// sooner would only repeat the cached error.
	retryMin, retryMax time.Duration
}

// Default retry schedule for failed ACME orders.
const (
	DefaultRetryMin = 75 * time.Second
	DefaultRetryMax = time.Hour
)

// acmeClient is autocert and what it needs; a reload that keeps the ACME
// account settings keeps it, with the certificates it holds and renews.
type acmeClient struct {
	mgr       *autocert.Manager
	challenge http.Handler // autocert's HTTP-01 responder
	settings  config.ACME  // what it was built from, but the hosts
	shared    *sharedCache // its cache with storage = "redis"; nil with "dir"
	// The names autocert may order for, answer challenges for: those of
	// the Manager started last.
	allowed atomic.Pointer[map[string]bool]
}

// New builds the manager from a validated [tls] table. When ACME is on,
// it creates the cache directory (0700), or with storage = "redis" uses
// the store WithSharedStore gives, but orders nothing until Start.
func New(tc *config.TLS, log *slog.Logger, opts ...Option) (*Manager, error) {
	return build(tc, nil, log, opts)
}

// Next builds the manager that replaces m on a reload, from a validated
// [tls] table: its static certificates, loaded anew from their files by
// validation, and its ACME hosts. When the ACME account settings (email,
// directory, CA root, storage, cache) are unchanged, the ACME client
// carries over with the certificates it holds, so hosts that stay are
// served at once; new hosts are ordered at Start, and removed hosts are no
// longer served (autocert may still renew one it holds; it never serves
// it). m serves on, unchanged, until the new manager is stored in Current.
// The shared store given to New stays, unless opts give one (the reload
// that added [cluster]).
func (m *Manager) Next(tc *config.TLS, opts ...Option) (*Manager, error) {
	return build(tc, m, m.log, opts)
}

func build(tc *config.TLS, prev *Manager, log *slog.Logger, opts []Option) (*Manager, error) {
	m := &Manager{
		log:      log,
		exact:    map[string][]*tls.Certificate{},
		wildcard: map[string][]*tls.Certificate{},
		retryMin: DefaultRetryMin,
		retryMax: DefaultRetryMax,
	}
	if prev != nil {
		m.store = prev.store
	}
	for _, o := range opts {
		o(m)
	}
	for i, c := range tc.Certificates {
		if c.Loaded == nil || c.Loaded.Leaf == nil {
			return nil, fmt.Errorf("tls.certificates[%d] (%s) was not loaded: validate the configuration first", i, c.CertFile)
		}
		m.addStatic(c.Loaded)
		info := CertInfo{Names: c.Loaded.Leaf.DNSNames, Source: "static", NotAfter: c.Loaded.Leaf.NotAfter}
		key := "static " + c.CertFile
		m.inUse.Store(key, info)
		if prev == nil || !prev.inUseAs(key, info) {
			m.logLoaded(info, "cert_file", c.CertFile)
		}
	}
	if len(tc.Certificates) > 0 && tc.UnknownSNI == config.UnknownSNIFirst {
		m.fallback = tc.Certificates[0].Loaded
	}
	if tc.ACME.Enabled {
		var keep *acmeClient
		if prev != nil && prev.acme != nil && sameAccount(&prev.acme.settings, &tc.ACME) {
			keep = prev.acme
		}
		if err := m.setupACME(&tc.ACME, keep); err != nil {
			return nil, err
		}
		if keep != nil {
			for host := range m.hosts {
				if v, ok := prev.inUse.Load("acme " + host); ok {
					m.inUse.Store("acme "+host, v)
				}
				// A host kept is as ready as it was: handshakes need not
				// wait for the new manager's Start.
				if r, ok := prev.ready[host]; ok {
					m.ready[host] = r
				}
			}
		}
	}
	m.config = m.tlsConfig()
	return m, nil
}

func (m *Manager) inUseAs(key string, info CertInfo) bool {
	v, ok := m.inUse.Load(key)
	return ok && v.(CertInfo).NotAfter.Equal(info.NotAfter) && slices.Equal(v.(CertInfo).Names, info.Names)
}

// sameAccount reports whether two [tls.acme] tables use the same CA
// account and certificate store, whatever their hosts.
func sameAccount(a, b *config.ACME) bool {
	return a.Email == b.Email && a.Directory == b.Directory && a.Storage == b.Storage && a.CacheDir == b.CacheDir &&
		a.CARoot == b.CARoot && a.RootCAs.Equal(b.RootCAs)
}

func (m *Manager) addStatic(c *tls.Certificate) {
	for _, n := range c.Leaf.DNSNames {
		n = strings.TrimSuffix(strings.ToLower(n), ".")
		if rest, ok := strings.CutPrefix(n, "*."); ok {
			m.wildcard[rest] = append(m.wildcard[rest], c)
		} else {
			m.exact[n] = append(m.exact[n], c)
		}
	}
}

// setupACME sets up ACME for ac's hosts, with keep's client if not nil.
func (m *Manager) setupACME(ac *config.ACME, keep *acmeClient) error {
	if len(ac.Hosts) == 0 {
		return errors.New("tls.acme: no hosts")
	}
	m.hosts = make(map[string]bool, len(ac.Hosts))
	m.ready = make(map[string]*readiness, len(ac.Hosts))
	for _, h := range ac.Hosts {
		h = strings.TrimSuffix(strings.ToLower(h), ".")
		m.hosts[h] = true
		m.ready[h] = &readiness{ch: make(chan struct{})}
	}
	if keep != nil {
		m.acme = keep
		return nil
	}
	a := &acmeClient{settings: *ac}
	var cache autocert.Cache
	switch {
	case ac.Storage == config.StorageRedis && m.store == nil:
		return errors.New(`tls.acme.storage = "redis" needs [cluster]`)
	case ac.Storage == config.StorageRedis:
		a.shared = &sharedCache{store: m.store, poll: sharedPoll, active: map[string]func(){}}
		cache = a.shared
	default:
		if err := os.MkdirAll(ac.CacheDir, 0o700); err != nil {
			return fmt.Errorf("tls.acme.cache_dir: %w", err)
		}
		cache = autocert.DirCache(ac.CacheDir)
	}
	client := &acme.Client{DirectoryURL: ac.Directory, UserAgent: "portico"}
	if ac.RootCAs != nil || a.shared != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if ac.RootCAs != nil {
			tr.TLSClientConfig = &tls.Config{RootCAs: ac.RootCAs, MinVersion: tls.VersionTLS12}
		}
		var rt http.RoundTripper = tr
		if a.shared != nil {
			rt = lockedOnly{next: tr, held: &a.shared.held}
		}
		client.HTTPClient = &http.Client{Timeout: time.Minute, Transport: rt}
	}
	a.settings.Hosts = nil
	a.allowed.Store(&m.hosts)
	a.mgr = &autocert.Manager{
		Prompt: autocert.AcceptTOS,
		Cache:  cache,
		// GetCertificate only asks autocert about listed hosts; the policy
		// also guards the HTTP-01 responder and anything added later.
		HostPolicy: func(_ context.Context, host string) error {
			if !(*a.allowed.Load())[host] {
				return fmt.Errorf("tlsmgr: %q is not an ACME host", host)
			}
			return nil
		},
		Client: client,
		Email:  ac.Email,
	}
	// Must come before the first order: it is what enables HTTP-01.
	a.challenge = a.mgr.HTTPHandler(http.NotFoundHandler())
	m.acme = a
	return nil
}

// tlsConfig is the manager's part of the listener's configuration: TLS 1.2
// and 1.3, ALPN h2 and http/1.1 (and acme-tls/1 for TLS-ALPN-01).
func (m *Manager) tlsConfig() *tls.Config {
	protos := []string{"h2", "http/1.1"}
	if m.acme != nil {
		protos = append(protos, acme.ALPNProto)
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     protos,
		GetCertificate: m.GetCertificate,
	}
}

// errUnknownName fails the handshake of a client naming no host we serve.
var errUnknownName = errors.New("tlsmgr: no certificate for this server name")

// GetCertificate picks a static certificate by SNI, then ACME for allowed
// hosts, then the fallback. A name that is not an ACME host never reaches
// autocert, so no client can make Portico order a certificate.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.TrimSuffix(strings.ToLower(hello.ServerName), ".")
	acmeHost := m.acme != nil && m.hosts[name]
	challenge := acmeHost && slices.Equal(hello.SupportedProtos, []string{acme.ALPNProto})
	if !challenge {
		if c := m.static(name, hello); c != nil {
			return c, nil
		}
	}
	if acmeHost {
		if m.acme.shared != nil && !challenge {
			// In a cluster only obtain orders: wait for it, as autocert
			// makes a handshake wait for its own order.
			select {
			case <-m.ready[name].ch:
			case <-hello.Context().Done():
				return nil, hello.Context().Err()
			}
		}
		c, err := m.acme.mgr.GetCertificate(hello)
		if err != nil {
			m.log.Warn("no ACME certificate for handshake", "host", name, "err", err)
			return nil, err
		}
		if !challenge {
			m.noteACME(name, c.Leaf)
		}
		return c, nil
	}
	if m.fallback != nil {
		return m.fallback, nil
	}
	return nil, errUnknownName
}

// static returns the first certificate for name that the client can use,
// or failing that the first for name; exact names beat wildcards.
func (m *Manager) static(name string, hello *tls.ClientHelloInfo) *tls.Certificate {
	cs := m.exact[name]
	if len(cs) == 0 {
		if dot := strings.IndexByte(name, '.'); dot > 0 {
			cs = m.wildcard[name[dot+1:]]
		}
	}
	if len(cs) > 1 {
		for _, c := range cs {
			if hello.SupportsCertificate(c) == nil {
				return c
			}
		}
	}
	if len(cs) > 0 {
		return cs[0]
	}
	return nil
}

func (m *Manager) noteACME(host string, leaf *x509.Certificate) {
	if leaf == nil {
		return
	}
	key := "acme " + host
	if old, ok := m.inUse.Load(key); ok && old.(CertInfo).NotAfter.Equal(leaf.NotAfter) {
		return
	}
	info := CertInfo{Names: leaf.DNSNames, Source: "acme", NotAfter: leaf.NotAfter}
	m.inUse.Store(key, info)
	m.logLoaded(info, "host", host)
}

func (m *Manager) logLoaded(info CertInfo, k, v string) {
	left := time.Until(info.NotAfter)
	attrs := []any{k, v, "source", info.Source, "names", info.Names,
		"not_after", info.NotAfter.UTC().Format(time.RFC3339), "days_left", int(left.Hours() / 24)}
	if left <= 0 {
		m.log.Warn("certificate in use has expired", attrs...)
		return
	}
	m.log.Info("certificate in use", attrs...)
}

// Certificates lists every certificate in use with its expiry, by source
// and first name.
func (m *Manager) Certificates() []CertInfo {
	var out []CertInfo
	m.inUse.Range(func(_, v any) bool {
		out = append(out, v.(CertInfo))
		return true
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].Source != out[j].Source {
			return out[i].Source > out[j].Source // static first
		}
		return strings.Join(out[i].Names, ",") < strings.Join(out[j].Names, ",")
	})
	return out
}

// challenge answers r if it is an ACME HTTP-01 challenge, and reports
// whether it was.
func (m *Manager) challenge(w http.ResponseWriter, r *http.Request) bool {
	if !strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
		return false
	}
	// autocert checks the Host header against its policy as is; a CA
	// probing a listener off port 80 (a test CA, or a port mapping) sends
	// one with a port.
	if host, _, err := net.SplitHostPort(r.Host); err == nil {
		r = r.Clone(r.Context())
		r.Host = host
	}
	m.acme.challenge.ServeHTTP(w, r)
	return true
}

// Start obtains a certificate for every ACME host in the background,
// retrying failures with backoff until ctx ends; autocert renews them
// afterwards. Call it once the listeners serve: the CA's challenges
// arrive on them. On a reload, call it when the manager is put in service
// and end the ctx of the one it replaces; hosts already held are not
// ordered again.
func (m *Manager) Start(ctx context.Context) {
	if m.acme == nil {
		return
	}
	m.acme.allowed.Store(&m.hosts)
	for host := range m.hosts {
		go m.obtain(ctx, host)
	}
}

func (m *Manager) obtain(ctx context.Context, host string) {
	// What a modern client offers, so that autocert picks an ECDSA certificate.
	hello := &tls.ClientHelloInfo{
		ServerName:        host,
		SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
		SupportedCurves:   []tls.CurveID{tls.CurveP256},
		CipherSuites:      []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
	}
	delay := m.retryMin
	for {
		c, err := m.getCertificate(ctx, hello)
		if err == nil {
			m.noteACME(host, c.Leaf)
			m.ready[host].set()
			return
		}
		wait := delay + rand.N(delay/4+1) // jitter, so hosts do not retry in step
		m.log.Error("ACME certificate not obtained; retrying", "host", host, "err", err, "retry_in", wait.Round(time.Second).String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		delay = min(2*delay, m.retryMax)
	}
}

// getCertificate has autocert load or order host's certificate. In a
// cluster it first makes sure that the store holds a certificate, or that
// this instance holds the host's lock, so that autocert never waits on
// another instance while it holds its own mutex: a certificate that has
// not expired is loaded as it is (autocert's renewal timer renews it under
// the lock if it is due); otherwise this instance orders under the lock or
// loads what the holder stored.
func (m *Manager) getCertificate(ctx context.Context, hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := m.acme.shared
	if c == nil {
		return m.acme.mgr.GetCertificate(hello)
	}
	host := hello.ServerName
	var release func()
	data, err := c.store.Get(ctx, host)
	if err != nil && !errors.Is(err, autocert.ErrCacheMiss) {
		return nil, err
	}
	if !usable(data) {
		if _, release, err = c.acquire(ctx, host); err != nil {
			return nil, err
		}
		if release != nil {
			m.log.Info("ordering the certificate for the cluster", "host", host)
		}
	}
	c.begin(host, release)
	defer c.end(host)
	return m.acme.mgr.GetCertificate(hello)
}

// Current is the Manager in service, for the listeners: the tls.Config and
// challenge handler it gives follow whichever Manager was stored last, so a
// reload changes certificates without touching the listeners. Session
// tickets stay valid across reloads: their keys belong to the listener's
// configuration, not to a Manager's.
type Current struct{ m atomic.Pointer[Manager] }

// Store puts m in service (nil: none, TLS is off).
func (c *Current) Store(m *Manager) { c.m.Store(m) }

// Load returns the Manager in service, or nil.
func (c *Current) Load() *Manager { return c.m.Load() }

// TLSConfig is the HTTPS listener's configuration: each handshake gets the
// configuration of the Manager in service.
func (c *Current) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			if m := c.m.Load(); m != nil {
				return m.config, nil
			}
			return nil, errUnknownName
		},
	}
}

// HTTPHandler answers ACME HTTP-01 challenges for the Manager in service
// and passes every other request to next.
func (c *Current) HTTPHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m := c.m.Load(); m != nil && m.acme != nil && m.challenge(w, r) {
			return
		}
		next.ServeHTTP(w, r)
	})
}
