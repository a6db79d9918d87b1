// Package config owns Portico's declarative configuration: the TOML schema,
// its defaults, and validation that reports every problem with file, line and
// key. It knows nothing of the runtime; cmd turns a validated Config into a
// running snapshot. It imports no other Portico package.
package config

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"net/url"
	"time"
)

// Config is one whole configuration file, validated and with defaults applied.
type Config struct {
	Server Server           `toml:"server"`
	Log    Log              `toml:"log"`
	Pools  map[string]*Pool `toml:"pools"`
	Routes []*Route         `toml:"routes"`
	TLS    TLS              `toml:"tls"`
	// Cluster is the Redis several instances share; see Cluster.Enabled.
	Cluster Cluster `toml:"cluster"`

	// Middlewares are the [middlewares.NAME] tables, decoded by type.
	Middlewares map[string]*Middleware `toml:"-"`

	// File is the path the configuration was read from, for messages.
	File string `toml:"-"`
	// Checksum is the SHA-256 of the document, in hex: which configuration
	// is in force, for the admin API.
	Checksum string `toml:"-"`
	// Warnings are problems that do not stop Portico, such as an expired
	// static certificate: validate prints them, run logs them.
	Warnings Problems `toml:"-"`

	keys *keyLines // where each key is written, for Problem
}

// Problem reports a problem found after validation, such as a listen
// address that cannot be bound, at the line where key is written.
func (c *Config) Problem(key, format string, args ...any) Problem {
	line := 1
	if c.keys != nil {
		line = max(c.keys.line(key), 1)
	}
	return Problem{File: c.File, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Server holds the listener settings.
type Server struct {
	HTTPAddr          string   `toml:"http_addr"`
	HTTPSAddr         string   `toml:"https_addr"`
	AdminAddr         string   `toml:"admin_addr"`
	AdminToken        Secret   `toml:"admin_token"` // required when admin_addr is not loopback
	AdminPprof        bool     `toml:"admin_pprof"` // serve /debug/pprof/ on the admin listener
	ReadHeaderTimeout Duration `toml:"read_header_timeout"`
	IdleTimeout       Duration `toml:"idle_timeout"`
	MaxHeaderBytes    int      `toml:"max_header_bytes"`
	MaxHeaderCount    int      `toml:"max_header_count"`
	MaxConns          int      `toml:"max_conns"`        // client connections on the listeners; 0: unlimited
	MaxConnsPerIP     int      `toml:"max_conns_per_ip"` // per client address; 0: unlimited
	ShutdownTimeout   Duration `toml:"shutdown_timeout"`
	ClientBodyTimeout Duration `toml:"client_body_timeout"`
	SendTimeout       Duration `toml:"send_timeout"`
	DrainTimeout      Duration `toml:"drain_timeout"`
	WatchConfig       bool     `toml:"watch_config"`
	TrustedProxies    []string `toml:"trusted_proxies"`
	RedirectHTTP      bool     `toml:"redirect_http"` // default: true when https_addr is set
	H2C               bool     `toml:"h2c"`
	HTTP2             HTTP2    `toml:"http2"`
	// Middlewares run first on every route, before the route's own.
	Middlewares []string `toml:"middlewares"`

	// Trusted is TrustedProxies parsed; a bare address is a one-address prefix.
	Trusted []netip.Prefix `toml:"-"`
}

// Log holds the process log settings.
type Log struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
	// AccessLog is "stdout", "off" or a file path; AccessFormat "json" or
	// "combined"; AccessLogQuery logs query strings, which may hold secrets.
	AccessLog      string `toml:"access_log"`
	AccessFormat   string `toml:"access_format"`
	AccessLogQuery bool   `toml:"access_log_query"`
}

// Pool is a named group of interchangeable backends.
type Pool struct {
	Balance                string     `toml:"balance"`
	Backends               []*Backend `toml:"backends"`
	DialTimeout            Duration   `toml:"dial_timeout"`
	ResponseHeaderTimeout  Duration   `toml:"response_header_timeout"`
	MaxIdleConnsPerBackend int        `toml:"max_idle_conns_per_backend"`
	Retries                int        `toml:"retries"`
	// Largest response header block a backend may send; beyond it 502.
	MaxResponseHeaderBytes int `toml:"max_response_header_bytes"`

	Resilience // health checks, outlier detection, limits: config/health.go

	// For https:// backends only.
	TLSServerName         string `toml:"tls_server_name"`
	TLSCAFile             string `toml:"tls_ca_file"`
	TLSInsecureSkipVerify bool   `toml:"tls_insecure_skip_verify"`

	// Filled in by validation: the backends' one scheme, and tls_ca_file's
	// certificates (nil: the system roots).
	Scheme  string         `toml:"-"`
	RootCAs *x509.CertPool `toml:"-"`
}

// Backend is one server of a pool.
type Backend struct {
	URL       string `toml:"url"`
	RawWeight *int   `toml:"weight"` // nil when unset, to tell it from an invalid 0

	// Filled in by validation: the weight (default 1) and the parsed URL,
	// with the default port of its scheme filled in.
	Weight int      `toml:"-"`
	Parsed *url.URL `toml:"-"`
}

// Route sends matching requests to a pool.
type Route struct {
	// Name identifies the route in logs, metrics and the admin API; by
	// default host and path_prefix, as in "app.example.com/api" or "/".
	Name        string `toml:"name"`
	Host        string `toml:"host"`
	PathPrefix  string `toml:"path_prefix"`
	StripPrefix bool   `toml:"strip_prefix"`
	Pool        string `toml:"pool"`
	// Middlewares run in order after server.middlewares.
	Middlewares []string `toml:"middlewares"`
	// MaxBodyBytes caps request bodies (0: unlimited); beyond it 413.
	MaxBodyBytes int64 `toml:"max_body_bytes"`
}

// Backend schemes. h2c is cleartext HTTP/2 with prior knowledge, which is
// what gRPC servers speak.
const (
	SchemeHTTP  = "http"
	SchemeHTTPS = "https"
	SchemeH2C   = "h2c"
)

// Balance policies a pool may name.
const (
	RoundRobin = "round_robin"
	LeastConn  = "least_conn"
	EWMA       = "ewma"
)

// Limits that keep a configuration within what the runtime is built for.
const (
	MaxWeight  = 1000 // weights are expanded into a schedule of their sum
	MaxRetries = 10
)

// Defaults, applied to whatever the file leaves unset.
const (
	DefaultHTTPAddr               = ":80"
	DefaultAdminAddr              = "127.0.0.1:9090"
	DefaultReadHeaderTimeout      = 10 * time.Second
	DefaultIdleTimeout            = 120 * time.Second
	DefaultMaxHeaderBytes         = 64 << 10
	DefaultMaxHeaderCount         = 100
	DefaultMaxResponseHeaderBytes = 64 << 10
	DefaultShutdownTimeout        = 30 * time.Second
	DefaultDrainTimeout           = 30 * time.Second
	DefaultClientBodyTimeout      = 60 * time.Second
	DefaultSendTimeout            = 60 * time.Second
	DefaultDialTimeout            = 2 * time.Second
	DefaultResponseHeaderTimeout  = 30 * time.Second
	DefaultMaxIdleConnsPerBackend = 128
	DefaultRetries                = 2
)

// Secret is a configuration value that must never be printed: formatting
// and encoding it (logs, %v, JSON, TOML) give "REDACTED".
type Secret string

const redacted = "REDACTED"

func (Secret) String() string               { return redacted }
func (Secret) GoString() string             { return redacted }
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// MinTokenLength is the shortest admin_token accepted: 16 random
// characters resist guessing over the network.
const MinTokenLength = 16

// Off disables a listener (admin_addr) or output (access_log).
const Off = "off"

// Access log destinations and formats besides a file path.
const (
	Stdout         = "stdout"
	FormatJSON     = "json"
	FormatCombined = "combined"
)

// Duration is a TOML string such as "2s" or "1m30s". Decoding never fails on
// it, so that validation can report every bad duration, not only the first.
type Duration struct {
	time.Duration
	set bool
	raw string
	err error
}

// UnmarshalText records the text; Validate reports a bad one.
func (d *Duration) UnmarshalText(b []byte) error {
	d.set, d.raw = true, string(b)
	d.Duration, d.err = time.ParseDuration(d.raw)
	if d.err == nil && d.Duration < 0 {
		d.err = fmt.Errorf("must not be negative")
	}
	return nil
}

// MarshalText writes the duration back in Go's notation.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

func (d *Duration) orDefault(v time.Duration) {
	if !d.set {
		d.Duration = v
	}
}
