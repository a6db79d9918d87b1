package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

type validator struct {
	file     string
	keys     *keyLines
	problems Problems
	warnings Problems
}

func (v *validator) add(key, format string, args ...any) {
	// A key written nowhere, such as a missing [[routes]], is the whole file's: line 1.
	line := max(v.keys.line(key), 1)
	v.problems = append(v.problems, Problem{File: v.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// warn records a problem that does not stop Portico.
func (v *validator) warn(key, format string, args ...any) {
	line := max(v.keys.line(key), 1)
	v.warnings = append(v.warnings, Problem{File: v.file, Line: line, Key: key, Msg: "warning: " + fmt.Sprintf(format, args...)})
}

// undecoded reports keys the schema does not know, once each where written:
// not again for the elements or keys written inside an unknown key's value.
func (v *validator) undecoded(keys []toml.Key) {
	unknown := map[string]bool{}
	for _, k := range keys {
		unknown[strings.Join(k, ".")] = true
	}
	reported := map[string]bool{}
	for _, path := range v.keys.order {
		if !unknown[withoutIndexes(path)] {
			continue
		}
		if parent := path[:max(strings.LastIndexAny(path, ".["), 0)]; !reported[parent] {
			v.add(path, "unknown key")
		}
		reported[path] = true
	}
}

func (v *validator) config(c *Config) {
	httpsOK := v.server(&c.Server)
	v.tls(&c.TLS, &c.Server, httpsOK)
	v.log(&c.Log)
	v.middlewares(c)
	v.cluster(&c.Cluster)
	v.clusterUsers(c)

	names := make([]string, 0, len(c.Pools))
	for name := range c.Pools {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		v.pool("pools."+name, c.Pools[name])
	}

	if len(c.Routes) == 0 {
		v.add("routes", "at least one [[routes]] entry is needed")
	}
	seen, byName := map[string]int{}, map[string]int{}
	for i, r := range c.Routes {
		key := "routes[" + strconv.Itoa(i) + "]"
		v.route(key, r, c.Pools)
		id := strings.ToLower(r.Host) + " " + r.PathPrefix
		if first, dup := seen[id]; dup {
			v.add(key, "duplicates routes[%d] (same host and path_prefix)", first)
			continue
		}
		seen[id] = i
		if first, dup := byName[r.Name]; dup {
			v.add(key+".name", "%q is routes[%d]'s name too: route names must be unique", r.Name, first)
		} else {
			byName[r.Name] = i
		}
	}
}

func (v *validator) duration(key string, d Duration) {
	if d.err != nil {
		v.add(key, "invalid duration %q: use a number with a unit, such as \"2s\" or \"1m30s\"", d.raw)
	}
}

// addr reports whether addr is a valid listen address, reporting it if not.
func (v *validator) addr(key, addr string, offAllowed bool) bool {
	if offAllowed && addr == Off {
		return true
	}
	if _, port, err := net.SplitHostPort(addr); err != nil {
		v.add(key, "invalid address %q: want host:port, such as \":80\" or \"127.0.0.1:8080\"", addr)
		return false
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.add(key, "invalid port in %q", addr)
		return false
	}
	return true
}

func validPort(port string) bool {
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535
}

// server checks [server] and reports whether https_addr is well formed.
func (v *validator) server(s *Server) (httpsOK bool) {
	v.addr("server.http_addr", s.HTTPAddr, false)
	httpsOK = s.HTTPSAddr == "" || v.addr("server.https_addr", s.HTTPSAddr, false)
	v.admin(s)
	v.duration("server.read_header_timeout", s.ReadHeaderTimeout)
	v.duration("server.idle_timeout", s.IdleTimeout)
	v.duration("server.shutdown_timeout", s.ShutdownTimeout)
	v.duration("server.drain_timeout", s.DrainTimeout)
	v.duration("server.client_body_timeout", s.ClientBodyTimeout)
	v.duration("server.send_timeout", s.SendTimeout)
	if s.MaxHeaderBytes < 1024 {
		v.add("server.max_header_bytes", "must be at least 1024, got %d", s.MaxHeaderBytes)
	}
	if s.MaxHeaderCount < 1 {
		v.add("server.max_header_count", "must be at least 1, got %d", s.MaxHeaderCount)
	}
	v.connLimits(s)
	s.Trusted = v.prefixes("server.trusted_proxies", s.TrustedProxies)
	if s.RedirectHTTP && s.HTTPSAddr == "" {
		v.add("server.redirect_http", "redirecting to HTTPS needs server.https_addr")
	}
	v.http2(&s.HTTP2)
	return httpsOK
}

// admin checks the admin listener: anyone who can reach it sees the whole
// topology and can profile the process, so off loopback it needs a token.
func (v *validator) admin(s *Server) {
	if !v.addr("server.admin_addr", s.AdminAddr, true) || s.AdminAddr == Off {
		return
	}
	if s.AdminToken == "" && !isLoopback(s.AdminAddr) {
		v.add("server.admin_addr", "%q is reachable from other hosts: set server.admin_token, or listen on loopback (such as \"127.0.0.1:9090\")", s.AdminAddr)
	}
	if s.AdminToken != "" && len(s.AdminToken) < MinTokenLength {
		v.add("server.admin_token", "too short: use at least %d characters, such as the output of \"openssl rand -hex 32\"", MinTokenLength)
	}
}

// isLoopback reports whether a listen address only accepts local
// connections. A host name other than localhost may resolve anywhere, and
// an empty host listens on every interface.
func isLoopback(addr string) bool {
	host, _, _ := net.SplitHostPort(addr)
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// connLimits checks the caps on client connections.
func (v *validator) connLimits(s *Server) {
	if s.MaxConns < 0 {
		v.add("server.max_conns", "must be 0 (unlimited) or more, got %d", s.MaxConns)
	}
	if s.MaxConnsPerIP < 0 {
		v.add("server.max_conns_per_ip", "must be 0 (unlimited) or more, got %d", s.MaxConnsPerIP)
	} else if s.MaxConns > 0 && s.MaxConnsPerIP > s.MaxConns {
		v.warn("server.max_conns_per_ip", "%d is more than server.max_conns (%d), so it never applies", s.MaxConnsPerIP, s.MaxConns)
	}
}

func (v *validator) log(l *Log) {
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		v.add("log.level", "unknown level %q: want debug, info, warn or error", l.Level)
	}
	switch l.Format {
	case "json", "text":
	default:
		v.add("log.format", "unknown format %q: want json or text", l.Format)
	}
	switch l.AccessFormat {
	case FormatJSON, FormatCombined:
	default:
		v.add("log.access_format", "unknown format %q: want %s or %s", l.AccessFormat, FormatJSON, FormatCombined)
	}
	switch l.AccessLog {
	case Stdout, Off:
	default:
		// The file itself is created at start; its directory must be there.
		if fi, err := os.Stat(filepath.Dir(l.AccessLog)); err != nil || !fi.IsDir() {
			v.add("log.access_log", "the directory of %q does not exist: want \"stdout\", \"off\" or a file path", l.AccessLog)
		}
	}
}

func (v *validator) pool(key string, p *Pool) {
	switch p.Balance {
	case RoundRobin, LeastConn, EWMA:
	default:
		v.add(key+".balance", "unknown balance %q: want %s, %s or %s", p.Balance, RoundRobin, LeastConn, EWMA)
	}
	if len(p.Backends) == 0 {
		v.add(key+".backends", "a pool needs at least one backend")
	}
	seen := map[string]int{}
	schemeOf := -1 // the first backend with a scheme
	for i, b := range p.Backends {
		bkey := key + ".backends[" + strconv.Itoa(i) + "]"
		v.backend(bkey, b)
		if b.Parsed == nil {
			continue
		}
		if first, dup := seen[b.Parsed.Host]; dup {
			v.add(bkey+".url", "duplicates backends[%d]", first)
		} else {
			seen[b.Parsed.Host] = i
		}
		// One transport serves a pool, so its backends speak one protocol.
		if schemeOf < 0 {
			schemeOf, p.Scheme = i, b.Parsed.Scheme
		} else if b.Parsed.Scheme != p.Scheme {
			v.add(bkey+".url", "scheme %q differs from backends[%d] (%q): a pool's backends share one scheme", b.Parsed.Scheme, schemeOf, p.Scheme)
		}
	}
	v.poolTLS(key, p)
	v.duration(key+".dial_timeout", p.DialTimeout)
	v.duration(key+".response_header_timeout", p.ResponseHeaderTimeout)
	if p.MaxIdleConnsPerBackend < 1 {
		v.add(key+".max_idle_conns_per_backend", "must be at least 1, got %d", p.MaxIdleConnsPerBackend)
	}
	if p.Retries < 0 || p.Retries > MaxRetries {
		v.add(key+".retries", "must be between 0 and %d, got %d", MaxRetries, p.Retries)
	}
	if p.MaxResponseHeaderBytes < 1024 {
		v.add(key+".max_response_header_bytes", "must be at least 1024, got %d", p.MaxResponseHeaderBytes)
	}
	v.resilience(key, &p.Resilience)
}

func (v *validator) backend(key string, b *Backend) {
	if b.Weight < 1 || b.Weight > MaxWeight {
		v.add(key+".weight", "must be between 1 and %d, got %d", MaxWeight, b.Weight)
	}
	u, err := url.Parse(b.URL)
	switch {
	case b.URL == "":
		v.add(key+".url", "missing: want a URL such as \"http://10.0.0.1:8080\"")
	case err != nil && !strings.Contains(b.URL, "://"), err == nil && (u.Scheme == "" || u.Hostname() == ""):
		v.add(key+".url", "%q needs a scheme and a host, such as \"http://10.0.0.1:8080\"", b.URL)
	case err != nil:
		v.add(key+".url", "invalid URL %q", b.URL)
	case u.Scheme != SchemeHTTP && u.Scheme != SchemeHTTPS && u.Scheme != SchemeH2C:
		v.add(key+".url", "unsupported scheme %q: want http, https or h2c", u.Scheme)
	case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		v.add(key+".url", "%q must be scheme://host[:port] only; use a route's strip_prefix to change paths", b.URL)
	case u.Port() != "" && !validPort(u.Port()):
		v.add(key+".url", "invalid port in %q: want 1 to 65535", b.URL)
	default:
		// Lower case, so that the same server is recognised however it is written.
		host, port := strings.ToLower(u.Hostname()), u.Port()
		if port == "" && u.Scheme == SchemeHTTPS {
			port = "443"
		} else if port == "" {
			port = "80"
		}
		b.Parsed = &url.URL{Scheme: u.Scheme, Host: net.JoinHostPort(host, port)}
	}
}

// poolTLS checks the keys that configure TLS to https:// backends.
func (v *validator) poolTLS(key string, p *Pool) {
	if p.Scheme != SchemeHTTPS && p.Scheme != "" {
		for k, set := range map[string]bool{
			"tls_server_name": p.TLSServerName != "", "tls_ca_file": p.TLSCAFile != "", "tls_insecure_skip_verify": p.TLSInsecureSkipVerify,
		} {
			if set {
				v.add(key+"."+k, "applies to https:// backends only; this pool's are %s://", p.Scheme)
			}
		}
		return
	}
	if p.TLSCAFile != "" {
		p.RootCAs = v.certPool(key+".tls_ca_file", p.TLSCAFile, false)
	}
	if p.TLSServerName != "" && (strings.ContainsAny(p.TLSServerName, " /:?#@") || net.ParseIP(p.TLSServerName) != nil) {
		v.add(key+".tls_server_name", "%q is not a DNS name", p.TLSServerName)
	}
}

func hasPort(h string) bool {
	_, _, err := net.SplitHostPort(h)
	return err == nil
}

func (v *validator) route(key string, r *Route, pools map[string]*Pool) {
	if r.Pool == "" {
		v.add(key+".pool", "missing: name the pool this route sends to")
	} else if _, ok := pools[r.Pool]; !ok {
		v.add(key+".pool", "no pool named %q", r.Pool)
	}
	if !strings.HasPrefix(r.PathPrefix, "/") {
		v.add(key+".path_prefix", "%q must start with \"/\"", r.PathPrefix)
	}
	if r.MaxBodyBytes < 0 {
		v.add(key+".max_body_bytes", "must be 0 (unlimited) or more, got %d", r.MaxBodyBytes)
	}
	// A derived name is as valid as the host and prefix it comes from.
	if _, written := v.keys.lines[key+".name"]; written && !validName(r.Name) {
		v.add(key+".name", "%q: use letters, digits and . _ - / * (at most 128)", r.Name)
	}
	h := r.Host
	switch {
	case h == "":
	case strings.Contains(h, ":") && !strings.HasPrefix(h, "["), hasPort(h):
		v.add(key+".host", "%q must not include a port: routes match any port", h)
	case strings.Contains(h[1:], "*") || (strings.HasPrefix(h, "*") && !strings.HasPrefix(h, "*.")):
		v.add(key+".host", "%q: a wildcard must be the whole first label, as in \"*.example.com\"", h)
	case strings.ContainsAny(h, " /?#@"):
		v.add(key+".host", "%q is not a host name", h)
	}
}

// validName reports whether a route name is fit for a log field or a metric
// label: short, printable, no spaces or quotes.
func validName(n string) bool {
	if n == "" || len(n) > 128 {
		return false
	}
	for _, c := range n {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.ContainsRune("._-/*", c):
		default:
			return false
		}
	}
	return true
}
