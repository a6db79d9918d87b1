package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portico/portico/config"
	"github.com/portico/portico/middleware"
)

// gcraScript is the generic cell rate algorithm of middleware's local
// table, run in Redis so that every instance decides on one state. Per key
// it stores the theoretical arrival time (TAT) of the next request, in
// microseconds of Redis's own clock (the instances' clocks never matter),
// and the key expires when the bucket is full again, so idle keys cost
// nothing. Integers throughout: microseconds since 1970 stay below 2^53,
// exact in Lua's numbers.
//
// KEYS[1] the bucket; ARGV[1] the interval between requests at the steady
// rate and ARGV[2] the tolerance (burst × interval), both in µs. It
// returns {allowed (0|1), remaining, retry after µs, reset µs}.
//
// Why not github.com/go-redis/redis_rate: it puts "rate:" in front of
// every key, so key_prefix could not hold (ACL key patterns, a Redis
// shared with another user of that library), takes whole requests per
// period, and keeps time as float seconds returned as strings.
var gcraScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local nxt = tat + interval
if nxt - now > tolerance then
  return {0, 0, nxt - tolerance - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.ceil((nxt - now) / 1000))
return {1, math.floor((tolerance - (nxt - now)) / interval), 0, nxt - now}
`)

// RateLimiter implements middleware.Global: the decider of one rate_limit
// with scope = "global". Its buckets are keyed by key_prefix, "rl:", the
// middleware's name and the key: a client address as written, any other
// key (a header's value, a user) as a SHA-256 prefix, so that no secret a
// client sends (an API key) is ever a Redis key.
func (c *Client) RateLimiter(name string, o *config.RateLimit, local middleware.Decider) middleware.Decider {
	interval := max(int64(math.Round(1e6/o.Rate.PerSecond)), 1)
	return &globalLimit{
		c:         c,
		prefix:    c.prefix + "rl:" + name + ":",
		args:      []any{interval, satMul(interval, int64(o.Burst))},
		burst:     o.Burst,
		local:     local,
		policy:    o.OnRedisError,
		fallbacks: counter(c.hooks.Fallbacks, name),
	}
}

func satMul(a, b int64) int64 {
	if b != 0 && a > math.MaxInt64/4/b {
		return math.MaxInt64 / 4
	}
	return a * b
}

type globalLimit struct {
	c         *Client
	prefix    string
	args      []any // interval and tolerance, boxed once
	burst     int
	local     middleware.Decider
	policy    string // config.OnError*
	fallbacks Counter
}

// Allow decides in Redis, in one round trip, or by the fallback policy
// when Redis does not answer within the timeout or the breaker is open.
func (g *globalLimit) Allow(k middleware.Key, now time.Time) middleware.Decision {
	c := g.c
	if !c.breaker.allow(time.Now().UnixNano()) {
		return g.fallback(k, now)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	res, err := gcraScript.Run(ctx, c.rdb, []string{g.key(k)}, g.args...).Int64Slice()
	cancel()
	if err == nil && len(res) != 4 {
		err = errShortReply
	}
	if err != nil {
		c.failed(OpRateLimit, err)
		if c.breaker.failure(time.Now().UnixNano()) {
			c.log.Warn("redis unavailable: global rate limits decided by their on_redis_error", "for", breakFor.String(), "err", errText(err))
		}
		return g.fallback(k, now)
	}
	if c.breaker.success() {
		c.log.Info("redis answers again: global rate limits decided in redis")
	}
	return middleware.Decision{
		Allowed:    res[0] == 1,
		Remaining:  int(res[1]),
		RetryAfter: time.Duration(res[2]) * time.Microsecond,
		Reset:      time.Duration(res[3]) * time.Microsecond,
	}
}

type replyError string

func (e replyError) Error() string { return string(e) }

const errShortReply = replyError("unexpected reply from the rate-limit script")

// fallback decides without Redis, as on_redis_error says.
func (g *globalLimit) fallback(k middleware.Key, now time.Time) middleware.Decision {
	g.fallbacks.Inc()
	switch g.policy {
	case config.OnErrorAllow:
		return middleware.Decision{Allowed: true, Remaining: g.burst - 1}
	case config.OnErrorDeny:
		return middleware.Decision{RetryAfter: breakFor}
	}
	return g.local.Allow(k, now)
}

// key is the bucket's Redis key.
func (g *globalLimit) key(k middleware.Key) string {
	var buf [160]byte
	b := append(buf[:0], g.prefix...)
	if k.IP.IsValid() {
		b = k.IP.AppendTo(b)
	} else {
		sum := sha256.Sum256([]byte(k.S))
		b = append(b, "s:"...)
		b = hex.AppendEncode(b, sum[:16])
	}
	return string(b)
}
