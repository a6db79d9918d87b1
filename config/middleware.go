package config

import (
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Middleware is one [middlewares.NAME] table: a named, typed step that
// routes list in their chain. Options points to the type's options struct
// (such as *RateLimit), validated and with defaults applied.
type Middleware struct {
	Name    string
	Type    string
	Options any
}

// Middleware types.
const (
	TypeBasicAuth        = "basic_auth"
	TypeAPIKey           = "api_key"
	TypeJWT              = "jwt"
	TypeForwardAuth      = "forward_auth"
	TypeIPFilter         = "ip_filter"
	TypeRateLimit        = "rate_limit"
	TypeConcurrencyLimit = "concurrency_limit"
	TypeRequestID        = "request_id"
	TypeHeaders          = "headers"
	TypeRedirect         = "redirect"
	TypeRewrite          = "rewrite"
	TypeCompress         = "compress"
)

// options is what every type's options struct does: fill in defaults for
// the keys the file left out, then check itself.
type options interface {
	defaults(defined func(key string) bool)
	validate(v *validator, key string)
}

// newOptions returns an empty options struct for each known type.
var newOptions = map[string]func() options{
	TypeBasicAuth:        func() options { return new(BasicAuth) },
	TypeAPIKey:           func() options { return new(APIKey) },
	TypeJWT:              func() options { return new(JWT) },
	TypeForwardAuth:      func() options { return new(ForwardAuth) },
	TypeIPFilter:         func() options { return new(IPFilter) },
	TypeRateLimit:        func() options { return new(RateLimit) },
	TypeConcurrencyLimit: func() options { return new(ConcurrencyLimit) },
	TypeRequestID:        func() options { return new(RequestID) },
	TypeHeaders:          func() options { return new(Headers) },
	TypeRedirect:         func() options { return new(Redirect) },
	TypeRewrite:          func() options { return new(Rewrite) },
	TypeCompress:         func() options { return new(Compress) },
}

func typeNames() string {
	names := make([]string, 0, len(newOptions))
	for n := range newOptions {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// decodeMiddlewares decodes each [middlewares.NAME] table into its type's
// options. A table's keys depend on its type, so each is kept as a
// toml.Primitive until its type is known; decoding it then marks the keys
// the type has, and md.Undecoded names the rest. It returns the names whose
// keys must not be reported as unknown: those whose type is missing or
// unknown, or whose decoding failed part way.
func (v *validator) decodeMiddlewares(c *Config, md *toml.MetaData, raw map[string]toml.Primitive) map[string]bool {
	skip := map[string]bool{}
	c.Middlewares = make(map[string]*Middleware, len(raw))
	for _, name := range sortedKeys(raw) {
		key := "middlewares." + name
		if !validName(name) {
			v.add(key, "%q: name middlewares with letters, digits and . _ - / * (at most 128)", name)
		}
		var head struct {
			Type string `toml:"type"`
		}
		if err := md.PrimitiveDecode(raw[name], &head); err != nil {
			v.decodeError(err)
			skip[name] = true
			continue
		}
		mk, ok := newOptions[head.Type]
		if !ok {
			if head.Type == "" {
				v.add(key+".type", "missing: want one of %s", typeNames())
			} else {
				v.add(key+".type", "unknown type %q: want one of %s", head.Type, typeNames())
			}
			skip[name] = true
			continue
		}
		opts := mk()
		if err := md.PrimitiveDecode(raw[name], opts); err != nil {
			v.decodeError(err)
			skip[name] = true
			continue
		}
		c.Middlewares[name] = &Middleware{Name: name, Type: head.Type, Options: opts}
	}
	return skip
}

// decodeError reports a value of the wrong TOML type inside a middleware.
func (v *validator) decodeError(err error) {
	p := decodeProblem(v.file, err)
	v.problems = append(v.problems, p)
}

func sortedKeys[T any](m map[string]T) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func applyMiddlewareDefaults(c *Config, md *toml.MetaData) {
	for name, m := range c.Middlewares {
		m.Options.(options).defaults(func(key string) bool {
			return md.IsDefined("middlewares", name, key)
		})
	}
}

func (v *validator) middlewares(c *Config) {
	for _, name := range sortedKeys(c.Middlewares) {
		c.Middlewares[name].Options.(options).validate(v, "middlewares."+name)
	}
	v.chain("server.middlewares", c.Server.Middlewares, nil, c.Middlewares)
	for i, r := range c.Routes {
		v.chain("routes["+strconv.Itoa(i)+"].middlewares", r.Middlewares, c.Server.Middlewares, c.Middlewares)
	}
}

// chain checks that a list names defined middlewares, none twice counting
// the server's, which run first on every route.
func (v *validator) chain(key string, names, server []string, defs map[string]*Middleware) {
	seen := map[string]bool{}
	for _, n := range server {
		seen[n] = true
	}
	for i, n := range names {
		k := key + "[" + strconv.Itoa(i) + "]"
		if _, ok := defs[n]; !ok {
			if _, written := v.keys.lines["middlewares."+n]; !written {
				v.add(k, "no middleware named %q: define it as [middlewares.%s]", n, n)
			} // else: its own table was reported
			continue
		}
		if seen[n] {
			v.add(k, "%q is already in this chain (server.middlewares run first on every route)", n)
		}
		seen[n] = true
	}
}

// IPFilter is type "ip_filter": allow or deny requests by client address.
type IPFilter struct {
	Allow []string `toml:"allow"`
	Deny  []string `toml:"deny"`

	// Allow and Deny parsed; bare addresses are one-address prefixes.
	AllowNets []netip.Prefix `toml:"-"`
	DenyNets  []netip.Prefix `toml:"-"`
}

func (o *IPFilter) defaults(func(string) bool) {}

func (o *IPFilter) validate(v *validator, key string) {
	if len(o.Allow) == 0 && len(o.Deny) == 0 {
		v.add(key, "an ip_filter needs allow, deny or both")
	}
	o.AllowNets = v.prefixes(key+".allow", o.Allow)
	o.DenyNets = v.prefixes(key+".deny", o.Deny)
}

// prefixes parses addresses and CIDRs, reporting each bad one.
func (v *validator) prefixes(key string, list []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(list))
	for i, s := range list {
		if p, ok := parsePrefix(s); ok {
			out = append(out, p)
		} else {
			v.add(key+"["+strconv.Itoa(i)+"]", "invalid CIDR %q: want an address or prefix, such as \"10.0.0.0/8\"", s)
		}
	}
	return out
}

// parsePrefix reads "10.0.0.0/8" or a bare address; IPv4-mapped IPv6
// addresses become IPv4, as client addresses are compared in that form.
func parsePrefix(s string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked(), true
		}
		return p.Masked(), true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

// Rate-limit and concurrency keys.
const (
	KeyClientIP = "client_ip"
	KeyUser     = "user"
	KeyRoute    = "route"
	KeyHeader   = "header" // written "header:NAME"
)

// LimitKey is what a limit counts by: "client_ip", "user", "route" or
// "header:NAME".
type LimitKey struct {
	Kind   string // one of the Key constants
	Header string // canonical header name, for KeyHeader
}

func (v *validator) limitKey(key, raw string) LimitKey {
	switch raw {
	case KeyClientIP, KeyUser, KeyRoute:
		return LimitKey{Kind: raw}
	}
	if name, ok := strings.CutPrefix(raw, KeyHeader+":"); ok && validHeaderName(name) {
		return LimitKey{Kind: KeyHeader, Header: http.CanonicalHeaderKey(name)}
	}
	v.add(key, "unknown key %q: want client_ip, user, route or header:NAME", raw)
	return LimitKey{}
}

// RateLimit is type "rate_limit": a GCRA limit of requests per key.
type RateLimit struct {
	Rate    Rate   `toml:"rate"`
	Burst   int    `toml:"burst"`
	Key     string `toml:"key"`
	MaxKeys int    `toml:"max_keys"`
	// Scope "global" shares the limit between instances through
	// [cluster]; OnRedisError says what decides when Redis cannot.
	Scope        string `toml:"scope"`
	OnRedisError string `toml:"on_redis_error"`

	Limit      LimitKey `toml:"-"` // Key parsed
	onErrorSet bool
}

// Rate-limit defaults.
const (
	DefaultRateLimitKey = KeyClientIP
	DefaultMaxKeys      = 100_000
)

func (o *RateLimit) defaults(defined func(string) bool) {
	if o.Key == "" {
		o.Key = DefaultRateLimitKey
	}
	if o.Scope == "" {
		o.Scope = ScopeLocal
	}
	o.onErrorSet = defined("on_redis_error")
	if !o.onErrorSet {
		o.OnRedisError = OnErrorLocal
	}
	if !defined("max_keys") {
		o.MaxKeys = DefaultMaxKeys
	}
	// One second's worth, at least one request.
	if !defined("burst") && o.Rate.err == nil {
		o.Burst = max(1, int(o.Rate.PerSecond+0.999999))
	}
}

func (o *RateLimit) validate(v *validator, key string) {
	switch r := o.Rate; {
	case !r.set:
		v.add(key+".rate", "missing: requests per second, such as 100, or a string such as \"100/m\"")
	case r.err != nil:
		v.add(key+".rate", "%v", r.err)
	}
	if o.Burst < 1 {
		v.add(key+".burst", "must be at least 1, got %d", o.Burst)
	}
	if o.MaxKeys < 1 {
		v.add(key+".max_keys", "must be at least 1, got %d", o.MaxKeys)
	}
	o.Limit = v.limitKey(key+".key", o.Key)
	o.validScope(v, key)
}

// Rate is a request rate: a number of requests per second, or a string
// "N/s", "N/m" or "N/h".
type Rate struct {
	PerSecond float64
	set       bool
	err       error
}

// UnmarshalTOML accepts an integer, a float or a string; a bad value is kept
// for validation to report with its line.
func (r *Rate) UnmarshalTOML(v any) error {
	r.set = true
	switch x := v.(type) {
	case int64:
		r.PerSecond = float64(x)
	case float64:
		r.PerSecond = x
	case string:
		r.PerSecond, r.err = parseRate(x)
	default:
		r.err = fmt.Errorf("want a number or a string such as \"100/m\", got %T", v)
	}
	if r.err == nil && !(r.PerSecond > 0 && r.PerSecond <= 1e9) {
		r.err = fmt.Errorf("must be more than 0 (and at most 1e9 per second), got %v", r.PerSecond)
	}
	return nil
}

func parseRate(s string) (float64, error) {
	n, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	per := map[string]float64{"s": 1, "m": 60, "h": 3600}[strings.TrimSpace(unit)]
	f, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
	if !ok || per == 0 || err != nil {
		return 0, fmt.Errorf("invalid rate %q: want \"N/s\", \"N/m\" or \"N/h\", or a number per second", s)
	}
	return f / per, nil
}

// ConcurrencyLimit is type "concurrency_limit": requests in flight per key.
type ConcurrencyLimit struct {
	Max          int      `toml:"max"`
	Key          string   `toml:"key"`
	QueueTimeout Duration `toml:"queue_timeout"`

	Limit LimitKey `toml:"-"`
}

// DefaultConcurrencyKey counts a route's requests together.
const DefaultConcurrencyKey = KeyRoute

func (o *ConcurrencyLimit) defaults(func(string) bool) {
	if o.Key == "" {
		o.Key = DefaultConcurrencyKey
	}
}

func (o *ConcurrencyLimit) validate(v *validator, key string) {
	if o.Max < 1 {
		v.add(key+".max", "must be at least 1, got %d", o.Max)
	}
	v.duration(key+".queue_timeout", o.QueueTimeout)
	o.Limit = v.limitKey(key+".key", o.Key)
}

// RequestID is type "request_id": an ID for each request.
type RequestID struct {
	Header string `toml:"header"`
}

// DefaultRequestIDHeader is the header request IDs travel in.
const DefaultRequestIDHeader = "X-Request-ID"

func (o *RequestID) defaults(func(string) bool) {
	if o.Header == "" {
		o.Header = DefaultRequestIDHeader
	}
}

func (o *RequestID) validate(v *validator, key string) {
	v.headerName(key+".header", o.Header)
	o.Header = http.CanonicalHeaderKey(o.Header)
}

// Headers is type "headers": header rules for requests and responses.
// Values may use the placeholders in HeaderPlaceholders.
type Headers struct {
	RequestSet     map[string]string `toml:"request_set"`
	RequestAdd     map[string]string `toml:"request_add"`
	RequestRemove  []string          `toml:"request_remove"`
	ResponseSet    map[string]string `toml:"response_set"`
	ResponseAdd    map[string]string `toml:"response_add"`
	ResponseRemove []string          `toml:"response_remove"`
}

// HeaderPlaceholders are what header values may refer to as {name}.
var HeaderPlaceholders = []string{"client_ip", "request_id", "host", "scheme"}

// placeholderRe finds what looks like a placeholder; other braces, as in a
// JSON value, are text.
var placeholderRe = regexp.MustCompile(`\{[a-z_]+\}`)

func (o *Headers) defaults(func(string) bool) {}

func (o *Headers) validate(v *validator, key string) {
	if len(o.RequestSet)+len(o.RequestAdd)+len(o.RequestRemove)+len(o.ResponseSet)+len(o.ResponseAdd)+len(o.ResponseRemove) == 0 {
		v.add(key, "a headers middleware needs at least one of request_set, request_add, request_remove, response_set, response_add, response_remove")
	}
	for name, m := range map[string]map[string]string{
		"request_set": o.RequestSet, "request_add": o.RequestAdd, "response_set": o.ResponseSet, "response_add": o.ResponseAdd,
	} {
		for _, h := range sortedKeys(m) {
			k := key + "." + name + "." + h
			v.headerName(k, h)
			v.headerValue(k, m[h])
		}
	}
	for name, list := range map[string][]string{"request_remove": o.RequestRemove, "response_remove": o.ResponseRemove} {
		for i, h := range list {
			v.headerName(key+"."+name+"["+strconv.Itoa(i)+"]", h)
		}
	}
}

func (v *validator) headerValue(key, val string) {
	if strings.ContainsAny(val, "\r\n\x00") {
		v.add(key, "a header value cannot contain line breaks or NUL")
	}
	for _, p := range placeholderRe.FindAllString(val, -1) {
		name := p[1 : len(p)-1]
		if !contains(HeaderPlaceholders, name) {
			v.add(key, "unknown placeholder %s: want {%s}", p, strings.Join(HeaderPlaceholders, "}, {"))
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// headerName reports a name that is not an HTTP token.
func (v *validator) headerName(key, name string) {
	if !validHeaderName(name) {
		v.add(key, "%q is not a valid header name", name)
	}
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// Redirect is type "redirect": requests whose URL matches From are sent to To.
type Redirect struct {
	From   string `toml:"from"`
	To     string `toml:"to"`
	Status int    `toml:"status"`
}

// DefaultRedirectStatus is a temporary redirect.
const DefaultRedirectStatus = http.StatusFound

func (o *Redirect) defaults(defined func(string) bool) {
	if !defined("status") {
		o.Status = DefaultRedirectStatus
	}
}

func (o *Redirect) validate(v *validator, key string) {
	re := v.regexp(key+".from", o.From)
	if o.To == "" {
		v.add(key+".to", "missing: the URL to redirect to, such as \"https://example.com/$1\"")
	} else if re != nil {
		v.references(key+".to", o.To, re)
	}
	switch o.Status {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
	default:
		v.add(key+".status", "must be 301, 302, 307 or 308, got %d", o.Status)
	}
}

// Rewrite is type "rewrite": the path is changed before forwarding.
type Rewrite struct {
	PathRegex   string `toml:"path_regex"`
	Replacement string `toml:"replacement"`
}

func (o *Rewrite) defaults(func(string) bool) {}

func (o *Rewrite) validate(v *validator, key string) {
	re := v.regexp(key+".path_regex", o.PathRegex)
	if !strings.HasPrefix(o.Replacement, "/") && !strings.HasPrefix(o.Replacement, "$") {
		v.add(key+".replacement", "%q must start with \"/\" (or a $ reference to a group that does)", o.Replacement)
	} else if re != nil {
		v.references(key+".replacement", o.Replacement, re)
	}
}

func (v *validator) regexp(key, expr string) *regexp.Regexp {
	if expr == "" {
		v.add(key, "missing: a regular expression")
		return nil
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		v.add(key, "invalid regular expression: %v", err)
		return nil
	}
	return re
}

// refRe finds $1, ${1} and ${name} in a template.
var refRe = regexp.MustCompile(`\$(\d+|\{\w+\})`)

// references reports $N or ${name} that re does not capture.
func (v *validator) references(key, tmpl string, re *regexp.Regexp) {
	for _, m := range refRe.FindAllStringSubmatch(strings.ReplaceAll(tmpl, "$$", ""), -1) {
		ref := strings.Trim(m[1], "{}")
		if n, err := strconv.Atoi(ref); err == nil {
			if n > re.NumSubexp() {
				v.add(key, "$%d refers to a group the expression does not have (it has %d)", n, re.NumSubexp())
			}
		} else if re.SubexpIndex(ref) < 0 {
			v.add(key, "${%s} refers to a group the expression does not name", ref)
		}
	}
}

// Compress is type "compress": responses encoded for clients that accept it.
type Compress struct {
	Encodings []string `toml:"encodings"`
	Types     []string `toml:"types"`
	MinLength int      `toml:"min_length"`
}

// Compression defaults and the encodings Portico speaks.
var (
	CompressEncodings        = []string{"zstd", "br", "gzip"}
	DefaultCompressEncodings = []string{"zstd", "br", "gzip"}
	DefaultCompressTypes     = []string{
		"text/*", "application/json", "application/javascript", "application/xml",
		"application/xhtml+xml", "application/rss+xml", "application/atom+xml",
		"application/manifest+json", "application/ld+json", "application/problem+json",
		"application/wasm", "image/svg+xml",
	}
)

// DefaultCompressMinLength is the smallest body worth encoding.
const DefaultCompressMinLength = 1024

func (o *Compress) defaults(defined func(string) bool) {
	if !defined("encodings") {
		o.Encodings = DefaultCompressEncodings
	}
	if !defined("types") {
		o.Types = DefaultCompressTypes
	}
	if !defined("min_length") {
		o.MinLength = DefaultCompressMinLength
	}
}

func (o *Compress) validate(v *validator, key string) {
	if len(o.Encodings) == 0 {
		v.add(key+".encodings", "list at least one of %s", strings.Join(CompressEncodings, ", "))
	}
	seen := map[string]bool{}
	for i, e := range o.Encodings {
		k := key + ".encodings[" + strconv.Itoa(i) + "]"
		switch {
		case !contains(CompressEncodings, e):
			v.add(k, "unknown encoding %q: want %s", e, strings.Join(CompressEncodings, ", "))
		case seen[e]:
			v.add(k, "%q is listed twice", e)
		}
		seen[e] = true
	}
	if len(o.Types) == 0 {
		v.add(key+".types", "list at least one media type, such as \"text/*\"")
	}
	for i, t := range o.Types {
		typ, sub, ok := strings.Cut(t, "/")
		if !ok || !validHeaderName(typ) || typ == "*" || (sub != "*" && !validHeaderName(sub)) {
			v.add(key+".types["+strconv.Itoa(i)+"]", "%q is not a media type such as \"text/html\" or \"text/*\"", t)
		}
	}
	if o.MinLength < 0 {
		v.add(key+".min_length", "must be 0 or more, got %d", o.MinLength)
	}
}

// durationMin reports a duration shorter than lo (and an invalid one).
func (v *validator) durationMin(key string, d Duration, lo time.Duration) {
	v.duration(key, d)
	if d.err == nil && d.Duration < lo {
		v.add(key, "must be at least %s, got %s", lo, d.Duration)
	}
}
