// Package cluster owns what several Portico instances share through one
// Redis ([cluster]): the connection pool, rate-limit decisions for limits
// with scope = "global" (GCRA in a Lua script, one round trip each), the
// ACME account key and certificates (an autocert.Cache), and the locks
// that let one instance at a time order a certificate.
//
// A Client is made once per process and shared by every snapshot; the
// middlewares it serves are built from it at snapshot build. Redis being
// slow or down never holds a request longer than the configured timeout:
// decisions fall back as each limit says, failures are counted and logged
// at most once every 10 s, and a circuit breaker stops calling Redis for a
// few seconds after repeated failures. The package never imports proxy.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/portico/portico/config"
)

// Counter counts events; package metrics provides counters that satisfy it.
type Counter interface{ Inc() }

// Hooks report what the client does, for metrics. Nil functions, or nil
// counters, count nothing. They are called when a client or a middleware
// is built, never per request.
type Hooks struct {
	// Errors counts failed Redis calls by operation: "rate_limit",
	// "storage" or "lock".
	Errors func(operation string) Counter
	// Fallbacks counts a global rate limit's decisions made without Redis
	// (it failed, or the breaker was open), by middleware.
	Fallbacks func(middleware string) Counter
}

// Operations, the values of the Errors hook's label.
const (
	OpRateLimit = "rate_limit"
	OpStorage   = "storage"
	OpLock      = "lock"
)

// Client is the process's connection to the shared Redis.
type Client struct {
	rdb     redis.UniversalClient
	prefix  string
	timeout time.Duration // per call on the request path
	lockTTL time.Duration
	id      string // this process, in lock tokens: host/pid
	log     *slog.Logger
	hooks   Hooks
	errs    map[string]Counter

	breaker  breaker
	lastLog  atomic.Int64 // unix ns of the last failure logged
	unlogged atomic.Int64 // failures since
}

// storageTimeout bounds a storage or lock call: certificates are small,
// but nothing waits on them per request, so a busy Redis gets more room.
const storageTimeout = 5 * time.Second

// logEvery is how often, at most, failing calls are logged.
const logEvery = 10 * time.Second

// New builds the client from a validated [cluster] table. It does not wait
// for Redis: an instance starts, and serves, while Redis is away.
func New(c *config.Cluster, log *slog.Logger, hooks Hooks) (*Client, error) {
	password := string(c.Password)
	if c.RedisPasswordEnv != "" {
		password = os.Getenv(c.RedisPasswordEnv)
		if password == "" {
			return nil, fmt.Errorf("cluster.redis_password_env: %s is not set", c.RedisPasswordEnv)
		}
	}
	// go-redis logs every failed dial on its own, to stderr: failures are
	// counted and logged here instead, at most once every logEvery.
	redis.SetLogger(quiet{})
	host, _ := os.Hostname()
	opts := &redis.UniversalOptions{
		Addrs:      c.Addrs,
		DB:         c.DB,
		Username:   c.Username,
		Password:   password,
		MasterName: c.MasterName,
		ClientName: "portico",
		// Every call carries its own deadline; these bound a call that
		// somehow has none.
		ContextTimeoutEnabled: true,
		DialTimeout:           storageTimeout,
		ReadTimeout:           storageTimeout,
		WriteTimeout:          storageTimeout,
		PoolTimeout:           storageTimeout,
		// A failed call is not repeated: a rate-limit decision falls back
		// at once, and the certificate loops try again on their own.
		MaxRetries:               -1,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if c.TLS {
		opts.TLSConfig = tlsConfig(c.Addrs[0])
	}
	cl := &Client{
		rdb:     redis.NewUniversalClient(opts),
		prefix:  c.KeyPrefix,
		timeout: c.Timeout.Duration,
		lockTTL: c.LockTTL.Duration,
		id:      host + "/" + strconv.Itoa(os.Getpid()),
		log:     log,
		hooks:   hooks,
		errs:    map[string]Counter{},
	}
	for _, op := range []string{OpRateLimit, OpStorage, OpLock} {
		cl.errs[op] = counter(hooks.Errors, op)
	}
	return cl, nil
}

// Ping checks that Redis answers, for the log at start.
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, storageTimeout)
	defer cancel()
	return c.rdb.Ping(ctx).Err()
}

// Close closes the connections. Deciders built from the client fall back
// from then on.
func (c *Client) Close() error { return c.rdb.Close() }

// Available reports whether rate-limit decisions go to Redis: false while
// the breaker is open, for the metrics.
func (c *Client) Available() bool { return c.breaker.openUntil.Load() == 0 }

func counter[K any](f func(K) Counter, k K) Counter {
	if f != nil {
		if c := f(k); c != nil {
			return c
		}
	}
	return nopCounter{}
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

type nopCounter struct{}

func (nopCounter) Inc() {}

// failed counts a failed call and logs it, at most once every logEvery,
// with how many failed since the last line.
func (c *Client) failed(op string, err error) {
	c.errs[op].Inc()
	c.unlogged.Add(1)
	now := time.Now().UnixNano()
	last := c.lastLog.Load()
	if now-last < int64(logEvery) || !c.lastLog.CompareAndSwap(last, now) {
		return
	}
	c.log.Warn("redis call failed", "operation", op, "err", errText(err),
		"failures", c.unlogged.Swap(0), "breaker_open", !c.Available())
}

// errText says what went wrong without go-redis's wording for a deadline,
// which names no timeout.
func errText(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "no answer within the timeout"
	}
	return err.Error()
}

// token makes a lock's token: this process's identity, so that an operator
// reading the lock in Redis sees who holds it, and 8 random bytes.
func (c *Client) token() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return c.id + "/" + hex.EncodeToString(b[:])
}

// tlsConfig is what rediss:// connects with: the first address's host
// name is what the server's certificate must name.
func tlsConfig(addr string) *tls.Config {
	host, _, _ := net.SplitHostPort(addr)
	return &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
}
