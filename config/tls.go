package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// TLS is the [tls] table: the certificates the HTTPS listener serves.
type TLS struct {
	Certificates []*Certificate `toml:"certificates"`
	// UnknownSNI says what a client gets whose server name matches no static
	// certificate and no ACME host, or that sends none (as clients
	// connecting to an IP address do).
	UnknownSNI string `toml:"unknown_sni"`
	ACME       ACME   `toml:"acme"`
}

// Certificate is one [[tls.certificates]] entry: a PEM certificate chain and
// its key, served to clients whose SNI matches one of its names.
type Certificate struct {
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`

	// Filled in by validation: the pair, loaded, with Leaf set.
	Loaded *tls.Certificate `toml:"-"`
}

// ACME is [tls.acme]: certificates obtained and renewed automatically.
type ACME struct {
	Enabled   bool   `toml:"enabled"`
	Email     string `toml:"email"`
	Directory string `toml:"directory"`
	CARoot    string `toml:"ca_root"`
	// Storage is where the account key and certificates are kept: "dir"
	// (CacheDir) or "redis" ([cluster], shared by every instance).
	Storage  string   `toml:"storage"`
	CacheDir string   `toml:"cache_dir"`
	Hosts    []string `toml:"hosts"` // default: every route host that is not a wildcard

	// Filled in by validation: ca_root's certificates added to the system
	// roots, or nil when ca_root is unset.
	RootCAs *x509.CertPool `toml:"-"`
}

// HTTP2 is [server.http2]: the limits of HTTP/2 connections from clients,
// on the HTTPS listener and, with h2c, on the plain one.
type HTTP2 struct {
	MaxConcurrentStreams int      `toml:"max_concurrent_streams"`
	MaxReadFrameSize     int      `toml:"max_read_frame_size"`
	IdleTimeout          Duration `toml:"idle_timeout"` // default: server.idle_timeout
}

// What unknown_sni may say.
const (
	UnknownSNIFirst  = "first_certificate" // the first [[tls.certificates]] entry
	UnknownSNIReject = "reject"            // a handshake failure
)

// TLS defaults.
const (
	DefaultACMEDirectory         = "https://acme-v02.api.letsencrypt.org/directory"
	DefaultACMECacheDir          = "/var/lib/portico/acme"
	DefaultMaxConcurrentStreams  = 250
	DefaultMaxReadFrameSize      = 1 << 20
	MinReadFrameSize             = 16 << 10  // RFC 9113: the smallest a peer may advertise
	MaxReadFrameSize             = 1<<24 - 1 // RFC 9113: the largest
	MaxConcurrentStreamsLimit    = 1000      // more per connection only feeds abusive clients
	staticCertExpiryWarningAhead = 14 * 24 * time.Hour
)

// Enabled reports whether the HTTPS listener has anything to serve.
func (t *TLS) Enabled() bool { return len(t.Certificates) > 0 || t.ACME.Enabled }

func applyTLSDefaults(c *Config, md *toml.MetaData) {
	s := &c.Server
	if !md.IsDefined("server", "redirect_http") {
		s.RedirectHTTP = s.HTTPSAddr != ""
	}
	if !md.IsDefined("server", "http2", "max_concurrent_streams") {
		s.HTTP2.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if !md.IsDefined("server", "http2", "max_read_frame_size") {
		s.HTTP2.MaxReadFrameSize = DefaultMaxReadFrameSize
	}
	s.HTTP2.IdleTimeout.orDefault(s.IdleTimeout.Duration)

	t := &c.TLS
	if t.UnknownSNI == "" {
		t.UnknownSNI = UnknownSNIFirst
	}
	a := &t.ACME
	if a.Directory == "" {
		a.Directory = DefaultACMEDirectory
	}
	if a.CacheDir == "" {
		a.CacheDir = DefaultACMECacheDir
	}
	if a.Storage == "" {
		a.Storage = StorageDir
	}
	if !md.IsDefined("tls", "acme", "hosts") {
		seen := map[string]bool{}
		for _, r := range c.Routes {
			h := strings.TrimSuffix(strings.ToLower(r.Host), ".")
			if h != "" && !strings.HasPrefix(h, "*") && !seen[h] {
				seen[h] = true
				a.Hosts = append(a.Hosts, h)
			}
		}
	}
}

func (v *validator) http2(h *HTTP2) {
	if h.MaxConcurrentStreams < 1 || h.MaxConcurrentStreams > MaxConcurrentStreamsLimit {
		v.add("server.http2.max_concurrent_streams", "must be between 1 and %d, got %d", MaxConcurrentStreamsLimit, h.MaxConcurrentStreams)
	}
	if h.MaxReadFrameSize < MinReadFrameSize || h.MaxReadFrameSize > MaxReadFrameSize {
		v.add("server.http2.max_read_frame_size", "must be between %d and %d, got %d", MinReadFrameSize, MaxReadFrameSize, h.MaxReadFrameSize)
	}
	v.duration("server.http2.idle_timeout", h.IdleTimeout)
}

// tls checks [tls] against the listeners: HTTPS needs something to serve,
// and certificates need a listener to be served on. httpsOK is false when
// https_addr was already reported as malformed.
func (v *validator) tls(t *TLS, s *Server, httpsOK bool) {
	switch {
	case s.HTTPSAddr != "" && httpsOK && !t.Enabled():
		v.add("server.https_addr", "HTTPS needs certificates: add [[tls.certificates]] or enable [tls.acme]")
	case s.HTTPSAddr == "" && t.Enabled():
		key := "tls.certificates"
		if t.ACME.Enabled {
			key = "tls.acme.enabled"
		}
		v.add(key, "certificates need an HTTPS listener: set server.https_addr, such as \":443\"")
	}
	switch t.UnknownSNI {
	case UnknownSNIFirst, UnknownSNIReject:
	default:
		v.add("tls.unknown_sni", "unknown value %q: want %q or %q", t.UnknownSNI, UnknownSNIFirst, UnknownSNIReject)
	}
	for i, c := range t.Certificates {
		v.certificate("tls.certificates["+strconv.Itoa(i)+"]", c)
	}
	if t.ACME.Enabled {
		v.acme(&t.ACME)
	}
}

func (v *validator) certificate(key string, c *Certificate) {
	if c.CertFile == "" {
		v.add(key+".cert_file", "missing: name a PEM certificate file")
	}
	if c.KeyFile == "" {
		v.add(key+".key_file", "missing: name a PEM private key file")
	}
	if c.CertFile == "" || c.KeyFile == "" {
		return
	}
	certPEM, err := os.ReadFile(c.CertFile)
	if err != nil {
		v.add(key+".cert_file", "cannot read: %v", unwrapPath(err))
	}
	keyPEM, kerr := os.ReadFile(c.KeyFile)
	if kerr != nil {
		v.add(key+".key_file", "cannot read: %v", unwrapPath(kerr))
	}
	if err != nil || kerr != nil {
		return
	}
	// The certificate is judged alone first, so that a bad one is not
	// blamed on the key.
	if block, _ := pem.Decode(certPEM); block == nil || block.Type != "CERTIFICATE" {
		v.add(key+".cert_file", "%q does not start with a PEM certificate", c.CertFile)
		return
	} else if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		v.add(key+".cert_file", "invalid certificate: %v", err)
		return
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		v.add(key+".key_file", "%v (is it the key of cert_file %q?)", err, c.CertFile)
		return
	}
	now := time.Now()
	switch leaf := pair.Leaf; {
	case now.After(leaf.NotAfter):
		v.warn(key+".cert_file", "certificate expired on %s; clients will refuse it", leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		v.warn(key+".cert_file", "certificate is not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	case leaf.NotAfter.Sub(now) < staticCertExpiryWarningAhead:
		v.warn(key+".cert_file", "certificate expires on %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	c.Loaded = &pair
}

func (v *validator) acme(a *ACME) {
	if a.Email == "" {
		v.add("tls.acme.email", "missing: the CA sends expiry and account notices to it")
	} else if !strings.Contains(a.Email, "@") || strings.ContainsAny(a.Email, " \t<>") {
		v.add("tls.acme.email", "%q is not an email address", a.Email)
	}
	if u, err := url.Parse(a.Directory); err != nil || u.Scheme != "https" || u.Host == "" {
		v.add("tls.acme.directory", "%q: want the https URL of an ACME directory", a.Directory)
	}
	if a.CARoot != "" {
		a.RootCAs = v.certPool("tls.acme.ca_root", a.CARoot, true)
	}
	if len(a.Hosts) == 0 {
		v.add("tls.acme.hosts", "no hosts to get certificates for: list them, or give routes a host that is not a wildcard")
	}
	for i, h := range a.Hosts {
		key := "tls.acme.hosts[" + strconv.Itoa(i) + "]"
		switch {
		case strings.HasPrefix(h, "*"):
			v.add(key, "%q: ACME over HTTP-01 and TLS-ALPN-01 cannot issue wildcard certificates; use [[tls.certificates]]", h)
		case net.ParseIP(h) != nil:
			v.add(key, "%q: an IP address; ACME hosts are DNS names", h)
		case strings.Contains(h, ":") || strings.ContainsAny(h, " /?#@") || !strings.Contains(strings.Trim(h, "."), "."):
			v.add(key, "%q is not a DNS name with a domain, such as \"app.example.com\"", h)
		}
	}
	switch a.Storage {
	case StorageDir:
		if err := writableDir(a.CacheDir); err != nil {
			v.add("tls.acme.cache_dir", "%q is not a writable directory: %v", a.CacheDir, err)
		}
	case StorageRedis:
		if _, written := v.keys.lines["tls.acme.cache_dir"]; written {
			v.add("tls.acme.cache_dir", "applies to storage = %q only; with %q certificates are kept in [cluster]'s Redis", StorageDir, StorageRedis)
		}
	default:
		v.add("tls.acme.storage", "unknown storage %q: want %q or %q", a.Storage, StorageDir, StorageRedis)
	}
}

// certPool reads PEM certificates from file; withSystem adds them to the
// system roots rather than replacing them.
func (v *validator) certPool(key, file string, withSystem bool) *x509.CertPool {
	pemData, err := os.ReadFile(file)
	if err != nil {
		v.add(key, "cannot read: %v", unwrapPath(err))
		return nil
	}
	pool := x509.NewCertPool()
	if withSystem {
		if sys, err := x509.SystemCertPool(); err == nil {
			pool = sys
		}
	}
	if !pool.AppendCertsFromPEM(pemData) {
		v.add(key, "%q holds no PEM certificate", file)
		return nil
	}
	return pool
}

// writableDir reports whether dir is, or could be created as, a directory
// this process can write to. It creates nothing that it does not remove:
// validate must leave the machine as it found it.
func writableDir(dir string) error {
	probe := dir
	for {
		fi, err := os.Stat(probe)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s is not a directory", probe)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return unwrapPath(err)
		}
		parent := filepath.Dir(probe)
		if parent == probe {
			return err
		}
		probe = parent
	}
	f, err := os.CreateTemp(probe, ".portico-probe-*")
	if err != nil {
		return unwrapPath(err)
	}
	_ = f.Close()
	return os.Remove(f.Name())
}

// unwrapPath drops the operation and path from a *fs.PathError: messages
// already name the key and the file.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
