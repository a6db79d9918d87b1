package config

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Resilience holds a pool's keys for health checking, outlier detection and
// overload protection. Pool embeds it, so its keys sit in [pools.NAME].
type Resilience struct {
	// Health enables active checks; nil when [pools.NAME.health] is absent.
	Health  *Health `toml:"health"`
	Passive Passive `toml:"passive"`

	PanicMode          bool     `toml:"panic_mode"`
	MaxConns           int      `toml:"max_conns"`
	QueueTimeout       Duration `toml:"queue_timeout"`
	RetryBudgetPercent int      `toml:"retry_budget_percent"`
	SlowStart          Duration `toml:"slow_start"`
	EWMADecay          Duration `toml:"ewma_decay"`
}

// Health is [pools.NAME.health]: how each backend is probed.
type Health struct {
	Path         string   `toml:"path"`
	Interval     Duration `toml:"interval"`
	Timeout      Duration `toml:"timeout"`
	Rise         int      `toml:"rise"`
	Fall         int      `toml:"fall"`
	ExpectStatus string   `toml:"expect_status"`
	ExpectBody   string   `toml:"expect_body"`
	Method       string   `toml:"method"`
	Host         string   `toml:"host"`

	// Statuses is ExpectStatus parsed by validation.
	Statuses []StatusRange `toml:"-"`
}

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct{ Min, Max int }

// Expects reports whether code is one of the expected statuses.
func (h *Health) Expects(code int) bool {
	for _, r := range h.Statuses {
		if code >= r.Min && code <= r.Max {
			return true
		}
	}
	return false
}

// Passive is [pools.NAME.passive]: outlier detection from real traffic.
type Passive struct {
	MaxFails          int      `toml:"max_fails"`
	FailTimeout       Duration `toml:"fail_timeout"`
	MaxFailTimeout    Duration `toml:"max_fail_timeout"`
	MaxEjectedPercent int      `toml:"max_ejected_percent"`
	FailOn5xx         bool     `toml:"fail_on_5xx"`
}

// Defaults of the resilience keys.
const (
	DefaultHealthPath         = "/healthz"
	DefaultHealthInterval     = 5 * time.Second
	DefaultHealthTimeout      = 2 * time.Second
	DefaultRise               = 2
	DefaultFall               = 3
	DefaultExpectStatus       = "200-399"
	DefaultHealthMethod       = "GET"
	DefaultMaxFails           = 3
	DefaultFailTimeout        = 10 * time.Second
	DefaultMaxFailTimeout     = 5 * time.Minute
	DefaultMaxEjectedPercent  = 50
	DefaultQueueTimeout       = time.Second
	DefaultRetryBudgetPercent = 20
	DefaultEWMADecay          = 10 * time.Second
)

// Limits of the resilience keys.
const (
	MaxRiseFall           = 100
	MaxRetryBudgetPercent = 100
	// Probing faster than this is load, not health checking.
	minHealthInterval = 10 * time.Millisecond
)

func (r *Resilience) applyDefaults(md *toml.MetaData, pool string) {
	defined := func(key ...string) bool { return md.IsDefined(append([]string{"pools", pool}, key...)...) }
	r.QueueTimeout.orDefault(DefaultQueueTimeout)
	r.EWMADecay.orDefault(DefaultEWMADecay)
	if !defined("retry_budget_percent") {
		r.RetryBudgetPercent = DefaultRetryBudgetPercent
	}

	p := &r.Passive
	if !defined("passive", "max_fails") {
		p.MaxFails = DefaultMaxFails
	}
	if !defined("passive", "max_ejected_percent") {
		p.MaxEjectedPercent = DefaultMaxEjectedPercent
	}
	p.FailTimeout.orDefault(DefaultFailTimeout)
	p.MaxFailTimeout.orDefault(max(DefaultMaxFailTimeout, p.FailTimeout.Duration))

	h := r.Health
	if h == nil {
		return
	}
	if h.Path == "" {
		h.Path = DefaultHealthPath
	}
	h.Interval.orDefault(DefaultHealthInterval)
	h.Timeout.orDefault(min(DefaultHealthTimeout, h.Interval.Duration))
	if !defined("health", "rise") {
		h.Rise = DefaultRise
	}
	if !defined("health", "fall") {
		h.Fall = DefaultFall
	}
	if !defined("health", "expect_status") {
		h.ExpectStatus = DefaultExpectStatus
	}
	if h.Method == "" {
		h.Method = DefaultHealthMethod
	}
}

func (v *validator) resilience(pool string, r *Resilience) {
	if r.MaxConns < 0 {
		v.add(pool+".max_conns", "must be 0 (unlimited) or more, got %d", r.MaxConns)
	}
	v.duration(pool+".queue_timeout", r.QueueTimeout)
	v.duration(pool+".slow_start", r.SlowStart)
	v.positive(pool+".ewma_decay", r.EWMADecay)
	if r.RetryBudgetPercent < 1 || r.RetryBudgetPercent > MaxRetryBudgetPercent {
		v.add(pool+".retry_budget_percent", "must be between 1 and %d, got %d", MaxRetryBudgetPercent, r.RetryBudgetPercent)
	}

	p, key := &r.Passive, pool+".passive"
	if p.MaxFails < 0 {
		v.add(key+".max_fails", "must be 0 (off) or more, got %d", p.MaxFails)
	}
	v.positive(key+".fail_timeout", p.FailTimeout)
	v.positive(key+".max_fail_timeout", p.MaxFailTimeout)
	if p.FailTimeout.err == nil && p.MaxFailTimeout.err == nil && p.MaxFailTimeout.Duration < p.FailTimeout.Duration {
		v.add(key+".max_fail_timeout", "must not be shorter than fail_timeout (%s)", p.FailTimeout.Duration)
	}
	if p.MaxEjectedPercent < 0 || p.MaxEjectedPercent > 100 {
		v.add(key+".max_ejected_percent", "must be between 0 and 100, got %d", p.MaxEjectedPercent)
	}

	if r.Health != nil {
		v.health(pool+".health", r.Health)
	}
}

// positive reports a duration that is invalid or zero.
func (v *validator) positive(key string, d Duration) {
	v.duration(key, d)
	if d.err == nil && d.Duration == 0 {
		v.add(key, "must be more than zero")
	}
}

func (v *validator) health(key string, h *Health) {
	if u, err := url.ParseRequestURI(h.Path); err != nil || !strings.HasPrefix(h.Path, "/") || u.Fragment != "" {
		v.add(key+".path", "%q must be an absolute path, such as \"/healthz\"", h.Path)
	}
	v.positive(key+".interval", h.Interval)
	v.positive(key+".timeout", h.Timeout)
	if h.Interval.err == nil && h.Timeout.err == nil && h.Interval.Duration > 0 {
		if h.Interval.Duration < minHealthInterval {
			v.add(key+".interval", "must be at least %s, got %s", minHealthInterval, h.Interval.Duration)
		}
		// Probes of a backend run one after another; a longer timeout would
		// let a hanging backend stretch the interval.
		if h.Timeout.Duration > h.Interval.Duration {
			v.add(key+".timeout", "must not be longer than interval (%s)", h.Interval.Duration)
		}
	}
	for _, c := range []struct {
		name string
		n    int
	}{{"rise", h.Rise}, {"fall", h.Fall}} {
		if c.n < 1 || c.n > MaxRiseFall {
			v.add(key+"."+c.name, "must be between 1 and %d, got %d", MaxRiseFall, c.n)
		}
	}
	var err string
	if h.Statuses, err = parseStatuses(h.ExpectStatus); err != "" {
		v.add(key+".expect_status", "%q: %s", h.ExpectStatus, err)
	}
	switch h.Method {
	case "GET", "OPTIONS":
	case "HEAD":
		if h.ExpectBody != "" {
			v.add(key+".expect_body", "cannot be checked with method HEAD, which has no body")
		}
	default:
		v.add(key+".method", "unsupported method %q: want GET, HEAD or OPTIONS", h.Method)
	}
	if h.Host != "" && (strings.ContainsAny(h.Host, " /?#@\t") || (strings.Contains(h.Host, ":") && !hasPort(h.Host) && !strings.HasPrefix(h.Host, "["))) {
		v.add(key+".host", "%q is not a host name", h.Host)
	}
}

// parseStatuses reads "200", "200-399" or a comma-separated list of them.
func parseStatuses(s string) ([]StatusRange, string) {
	var out []StatusRange
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		if !isRange {
			hi = lo
		}
		a, errA := strconv.Atoi(strings.TrimSpace(lo))
		b, errB := strconv.Atoi(strings.TrimSpace(hi))
		switch {
		case errA != nil || errB != nil:
			return nil, "want a status or range such as \"200\" or \"200-399\", comma-separated"
		case a < 100 || b > 599 || a > b:
			return nil, "statuses must be ascending ranges within 100-599"
		}
		out = append(out, StatusRange{a, b})
	}
	return out, ""
}
