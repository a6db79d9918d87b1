package middleware

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/portico/portico/config"
	"github.com/portico/portico/reqinfo"
)

// rateLimit is type "rate_limit". It answers 429 with Retry-After, and
// every response carries the IETF RateLimit-Policy and RateLimit fields
// (draft-ietf-httpapi-ratelimit-headers): q is the burst, w the seconds it
// takes to refill; r is what is left now, t the seconds until it is full.
type rateLimit struct {
	name     string
	decider  Decider
	key      config.LimitKey
	policy   []string // RateLimit-Policy, the same on every response
	now      func() time.Time
	rejected Counter
}

const (
	hdrRateLimit       = "Ratelimit" // canonical forms of RateLimit, RateLimit-Policy
	hdrRateLimitPolicy = "Ratelimit-Policy"
)

func newRateLimit(name string, o *config.RateLimit, env Env, prior any) (Middleware, any, error) {
	g, _ := prior.(*gcra)
	if g == nil {
		g = newGCRA(o.Rate.PerSecond, o.Burst, o.MaxKeys, o.Limit.Kind == config.KeyClientIP, env.now())
	}
	var decider Decider = g
	if o.Scope == config.ScopeGlobal {
		if env.Global == nil {
			return nil, nil, errors.New(`scope "global" needs [cluster]`)
		}
		// The local table stays the state carried across snapshots: it is
		// what decides when Redis cannot, and the shared state is in Redis.
		decider = env.Global.RateLimiter(name, o, g)
	}
	window := int64(math.Ceil(float64(o.Burst) / o.Rate.PerSecond))
	rl := &rateLimit{
		name:     name,
		decider:  decider,
		key:      o.Limit,
		policy:   []string{`"` + name + `";q=` + strconv.Itoa(o.Burst) + ";w=" + strconv.FormatInt(window, 10)},
		now:      env.Now,
		rejected: env.counter(name, ReasonRateLimited),
	}
	return rl, g, nil
}

func (rl *rateLimit) Wrap(next http.Handler, _ string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := reqinfo.From(r.Context())
		d := rl.decider.Allow(limitKey(rl.key, r, info), rl.clock(info))
		h := w.Header()
		h[hdrRateLimitPolicy] = rl.policy
		h[hdrRateLimit] = []string{rl.state(d)}
		if !d.Allowed {
			rl.rejected.Inc()
			h["Retry-After"] = []string{strconv.FormatInt(ceilSeconds(d.RetryAfter), 10)}
			refuse(w, http.StatusTooManyRequests, "too many requests")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// clock is the request's start time, already read once by the proxy, unless
// a test injected a clock.
func (rl *rateLimit) clock(info *reqinfo.Info) time.Time {
	switch {
	case rl.now != nil:
		return rl.now()
	case info != nil && !info.Start.IsZero():
		return info.Start
	}
	return time.Now()
}

func (rl *rateLimit) state(d Decision) string {
	var buf [64]byte
	b := append(buf[:0], '"')
	b = append(b, rl.name...)
	b = append(b, `";r=`...)
	b = strconv.AppendInt(b, int64(d.Remaining), 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, ceilSeconds(d.Reset), 10)
	return string(b)
}

// ceilSeconds rounds up to whole seconds, so a client never retries early.
func ceilSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

// limitKey extracts what a limit counts by. A missing header or an
// unauthenticated request makes the empty key: such requests share one
// bucket.
func limitKey(k config.LimitKey, r *http.Request, info *reqinfo.Info) Key {
	if info == nil {
		info = &reqinfo.Info{}
	}
	switch k.Kind {
	case config.KeyClientIP:
		return Key{IP: info.ClientIP}
	case config.KeyUser:
		return Key{S: info.User}
	case config.KeyRoute:
		return Key{S: info.Route}
	}
	if v := r.Header[k.Header]; len(v) > 0 {
		return Key{S: v[0]}
	}
	return Key{}
}
