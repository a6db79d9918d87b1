package config

import (
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Cluster is [cluster]: the Redis that several Portico instances share, for
// rate limits with scope = "global" and ACME with storage = "redis".
// Without it everything stays local to the instance.
type Cluster struct {
	// RedisURL is redis://[user:password@]host:port[/db], or rediss:// for
	// TLS. More addresses (?addr=host:port, repeated) make it a Redis
	// Cluster; ?master_name=NAME makes the addresses Sentinels.
	RedisURL         RedisURL `toml:"redis_url"`
	KeyPrefix        string   `toml:"key_prefix"`
	Timeout          Duration `toml:"timeout"`  // per Redis call on the request path
	LockTTL          Duration `toml:"lock_ttl"` // how long a crashed holder's certificate lock outlives it
	RedisPasswordEnv string   `toml:"redis_password_env"`

	// Filled in by validation, from RedisURL.
	Addrs      []string `toml:"-"` // host:port, at least one
	TLS        bool     `toml:"-"` // rediss://
	DB         int      `toml:"-"`
	MasterName string   `toml:"-"` // Sentinel: the monitored master
	Username   string   `toml:"-"`
	Password   Secret   `toml:"-"` // from the URL; redis_password_env is read at start

	present bool
}

// Cluster defaults.
const (
	DefaultClusterKeyPrefix = "portico:"
	DefaultClusterTimeout   = 50 * time.Millisecond
	DefaultClusterLockTTL   = 10 * time.Second
	MinClusterLockTTL       = time.Second
)

// Enabled reports whether [cluster] is in the file.
func (c *Cluster) Enabled() bool { return c.present }

// RedisURL is a Redis address that may carry a password: printed, logged
// or encoded, the password reads "xxxxx".
type RedisURL string

func (u RedisURL) String() string {
	p, err := url.Parse(string(u))
	if err != nil {
		return "(unparsable URL)"
	}
	return p.Redacted()
}

// MarshalText writes the URL without its password.
func (u RedisURL) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// Values of rate_limit's scope and on_redis_error, and of tls.acme.storage.
const (
	ScopeLocal     = "local"
	ScopeGlobal    = "global"
	OnErrorLocal   = "local"
	OnErrorAllow   = "allow"
	OnErrorDeny    = "deny"
	StorageDir     = "dir"
	StorageRedis   = "redis"
	defaultRedisDB = 0
)

func applyClusterDefaults(c *Config, md *toml.MetaData) {
	cl := &c.Cluster
	cl.present = md.IsDefined("cluster")
	if !md.IsDefined("cluster", "key_prefix") {
		cl.KeyPrefix = DefaultClusterKeyPrefix
	}
	cl.Timeout.orDefault(DefaultClusterTimeout)
	cl.LockTTL.orDefault(DefaultClusterLockTTL)
}

// cluster checks [cluster]. It never connects: validate must work where
// Redis is not reachable.
func (v *validator) cluster(c *Cluster) {
	if !c.present {
		return
	}
	v.redisURL(c)
	v.duration("cluster.timeout", c.Timeout)
	if c.Timeout.err == nil && (c.Timeout.Duration < time.Millisecond || c.Timeout.Duration > 10*time.Second) {
		v.add("cluster.timeout", "must be between 1ms and 10s, got %s", c.Timeout.Duration)
	}
	v.durationMin("cluster.lock_ttl", c.LockTTL, MinClusterLockTTL)
	if strings.ContainsAny(c.KeyPrefix, " \t\r\n") {
		v.add("cluster.key_prefix", "%q: a key prefix cannot contain spaces or line breaks", c.KeyPrefix)
	}
	if env := c.RedisPasswordEnv; env != "" {
		if c.Password != "" {
			v.add("cluster.redis_password_env", "the password is given twice: in redis_url and in %s; keep one", env)
		} else if os.Getenv(env) == "" {
			v.warn("cluster.redis_password_env", "%s is not set in this environment: run will refuse to start without it", env)
		}
	}
}

// redisURL parses cluster.redis_url into the fields the client is built from.
func (v *validator) redisURL(c *Cluster) {
	const key = "cluster.redis_url"
	const want = `want redis://[user:password@]host:port[/db] or rediss://..., such as "redis://10.0.0.9:6379/0"`
	if c.RedisURL == "" {
		v.add(key, "missing: %s", want)
		return
	}
	u, err := url.Parse(string(c.RedisURL))
	if err != nil {
		// The error quotes the URL, password included: say less.
		v.add(key, "not a URL: %s", want)
		return
	}
	switch u.Scheme {
	case "redis", "rediss":
	default:
		v.add(key, "unsupported scheme %q: %s", u.Scheme, want)
		return
	}
	c.TLS = u.Scheme == "rediss"
	if u.Hostname() == "" {
		v.add(key, "no host: %s", want)
		return
	}
	addrs := []string{u.Host}
	if u.Port() == "" {
		addrs[0] = net.JoinHostPort(u.Hostname(), "6379")
	}
	if u.User != nil {
		c.Username = u.User.Username()
		p, _ := u.User.Password()
		c.Password = Secret(p)
	}
	c.DB = defaultRedisDB
	if db := strings.Trim(u.Path, "/"); db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			v.add(key, "invalid database %q in the path: want a number, such as /0", db)
		}
		c.DB = n
	}
	q := u.Query()
	for _, name := range sortedKeys(q) {
		vals := q[name]
		switch name {
		case "addr":
			for _, a := range vals {
				if _, port, err := net.SplitHostPort(a); err != nil || !validPort(port) {
					v.add(key, "addr=%q: want host:port", a)
					continue
				}
				addrs = append(addrs, a)
			}
		case "master_name":
			c.MasterName = vals[len(vals)-1]
		default:
			v.add(key, "unknown parameter %q: want addr (more Cluster nodes or Sentinels) or master_name (Sentinel)", name)
		}
	}
	if len(addrs) > 1 && c.MasterName == "" && c.DB != 0 {
		v.add(key, "a Redis Cluster has only database 0, got /%d", c.DB)
	}
	c.Addrs = addrs
}

// clusterUsers checks what relies on [cluster]: global rate limits and
// certificates stored in Redis.
func (v *validator) clusterUsers(c *Config) {
	for _, name := range sortedKeys(c.Middlewares) {
		if rl, ok := c.Middlewares[name].Options.(*RateLimit); ok && rl.Scope == ScopeGlobal && !c.Cluster.present {
			v.add("middlewares."+name+".scope", `"global" needs a shared Redis: add [cluster] with redis_url`)
		}
	}
	if a := &c.TLS.ACME; a.Enabled && a.Storage == StorageRedis && !c.Cluster.present {
		v.add("tls.acme.storage", `"redis" needs a shared Redis: add [cluster] with redis_url`)
	}
}

// validScope checks rate_limit's scope and on_redis_error.
func (o *RateLimit) validScope(v *validator, key string) {
	switch o.Scope {
	case ScopeLocal, ScopeGlobal:
	default:
		v.add(key+".scope", "unknown scope %q: want %q or %q", o.Scope, ScopeLocal, ScopeGlobal)
	}
	switch o.OnRedisError {
	case OnErrorLocal, OnErrorAllow, OnErrorDeny:
	default:
		v.add(key+".on_redis_error", "unknown value %q: want %q, %q or %q", o.OnRedisError, OnErrorLocal, OnErrorAllow, OnErrorDeny)
		return
	}
	if o.onErrorSet && o.Scope == ScopeLocal {
		v.add(key+".on_redis_error", "applies to scope = %q only", ScopeGlobal)
	}
}
