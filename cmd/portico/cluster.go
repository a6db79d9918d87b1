package main

import (
	"context"
	"log/slog"

	"github.com/portico/portico/cluster"
	"github.com/portico/portico/config"
	"github.com/portico/portico/metrics"
)

// startCluster connects to [cluster]'s Redis, once for the process: every
// snapshot's global rate limits and the ACME store share the client. It
// returns nil without [cluster]. Redis need not answer yet: the outcome of
// a first ping is logged, and requests are decided by the fallbacks until
// it answers.
func startCluster(ctx context.Context, cc *config.Cluster, m *metrics.Metrics, log *slog.Logger) (*cluster.Client, error) {
	if !cc.Enabled() {
		return nil, nil
	}
	var hooks cluster.Hooks
	if m != nil {
		hooks.Errors = func(op string) cluster.Counter { return m.RedisErrors(op) }
		hooks.Fallbacks = func(mw string) cluster.Counter { return m.RateLimitFallbacks(mw) }
	}
	c, err := cluster.New(cc, log, hooks)
	if err != nil {
		return nil, err
	}
	if m != nil {
		m.WatchRedis(c.Available)
	}
	go func() {
		if err := c.Ping(ctx); err != nil {
			log.Warn("redis not reachable yet: global rate limits use their on_redis_error until it is", "redis", cc.RedisURL.String(), "err", err)
			return
		}
		log.Info("redis reachable", "redis", cc.RedisURL.String())
	}()
	return c, nil
}
