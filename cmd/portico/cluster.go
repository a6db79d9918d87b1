package main

import (
	"reflect"

	"github.com/portico/portico/cluster"
	"github.com/portico/portico/config"
)

// startCluster connects to [cluster]'s Redis the first time a
// configuration has one: one client for the process, which every
// snapshot's global rate limits and the ACME store share. Redis need not
// answer yet: the outcome of a first ping is logged, and requests are
// decided by the fallbacks until it answers. A reload that changes
// [cluster] keeps the client, and says so.
func (in *instance) startCluster(cfg *config.Config) error {
	cc := &cfg.Cluster
	if !cc.Enabled() {
		return nil
	}
	if in.shared != nil {
		if !reflect.DeepEqual(in.sharedFrom, *cc) {
			in.log.Warn("[cluster] changes take effect at the next start", "redis", in.sharedFrom.RedisURL.String())
		}
		return nil
	}
	var hooks cluster.Hooks
	if m := in.metrics; m != nil {
		hooks.Errors = func(op string) cluster.Counter { return m.RedisErrors(op) }
		hooks.Fallbacks = func(mw string) cluster.Counter { return m.RateLimitFallbacks(mw) }
	}
	c, err := cluster.New(cc, in.log, hooks)
	if err != nil {
		return err
	}
	if in.metrics != nil {
		in.metrics.WatchRedis(c.Available)
	}
	in.shared, in.sharedFrom = c, *cc
	in.bg.Go(func() {
		if err := c.Ping(in.ctx); err != nil {
			in.log.Warn("redis not reachable yet: global rate limits use their on_redis_error until it is", "redis", cc.RedisURL.String(), "err", err)
			return
		}
		in.log.Info("redis reachable", "redis", cc.RedisURL.String())
	})
	return nil
}
