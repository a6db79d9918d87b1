package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestClusterDefaultsAndParsedURL(t *testing.T) {
	cfg := parseOK(t, doc(tail(`[cluster]`, `redis_url = "rediss://portico:s3cret@redis.internal/2"`)...))
	c := cfg.Cluster
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"enabled", c.Enabled(), true},
		{"key_prefix", c.KeyPrefix, "portico:"},
		{"timeout", c.Timeout.Duration, 50 * time.Millisecond},
		{"lock_ttl", c.LockTTL.Duration, 10 * time.Second},
		{"addrs, default port", strings.Join(c.Addrs, ","), "redis.internal:6379"},
		{"tls", c.TLS, true},
		{"db", c.DB, 2},
		{"user", c.Username, "portico"},
		{"password", string(c.Password), "s3cret"},
		{"sentinel", c.MasterName, ""},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	// The password never shows in print or in JSON (the admin API).
	for _, s := range []string{fmt.Sprint(c.RedisURL), fmt.Sprintf("%v", c), mustJSON(t, c)} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("password shown: %s", s)
		}
	}

	cfg = parseOK(t, doc(tail()...))
	if cfg.Cluster.Enabled() {
		t.Error("cluster enabled without [cluster]")
	}
	if rl := cfg.TLS.ACME.Storage; rl != StorageDir {
		t.Errorf("tls.acme.storage defaults to %q, want %q", rl, StorageDir)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestClusterTopologies(t *testing.T) {
	for _, tc := range []struct {
		url, addrs, master string
	}{
		{"redis://10.0.0.9:6380", "10.0.0.9:6380", ""},
		{"redis://[::1]:6379/0", "[::1]:6379", ""},
		{"redis://n1:7000?addr=n2:7000&addr=n3:7000", "n1:7000,n2:7000,n3:7000", ""},
		{"redis://s1:26379/1?addr=s2:26379&master_name=main", "s1:26379,s2:26379", "main"},
	} {
		cfg := parseOK(t, doc(tail(`[cluster]`, fmt.Sprintf(`redis_url = %q`, tc.url))...))
		if got := strings.Join(cfg.Cluster.Addrs, ","); got != tc.addrs || cfg.Cluster.MasterName != tc.master {
			t.Errorf("%s: addrs %s, master %q; want %s, %q", tc.url, got, cfg.Cluster.MasterName, tc.addrs, tc.master)
		}
	}
}

func TestRateLimitScopeDefaults(t *testing.T) {
	cfg := parseOK(t, doc(lines(ls(
		`[cluster]`,
		`redis_url = "redis://127.0.0.1:6379"`,
		`[middlewares.l]`,
		`type = "rate_limit"`,
		`rate = 5`,
		`[middlewares.g]`,
		`type = "rate_limit"`,
		`rate = 5`,
		`scope = "global"`,
		`on_redis_error = "deny"`,
	), okPool, okRoute)...))
	l := cfg.Middlewares["l"].Options.(*RateLimit)
	g := cfg.Middlewares["g"].Options.(*RateLimit)
	if l.Scope != ScopeLocal || l.OnRedisError != OnErrorLocal || g.Scope != ScopeGlobal || g.OnRedisError != OnErrorDeny {
		t.Errorf("scopes %q/%q and %q/%q, want local/local and global/deny", l.Scope, l.OnRedisError, g.Scope, g.OnRedisError)
	}
}

func TestClusterProblems(t *testing.T) {
	t.Setenv("PORTICO_TEST_UNSET_PASSWORD", "")
	f := newTLSFiles(t)
	https := ls(`[server]`, `https_addr = ":443"`)
	hostRoute := ls(`[[routes]]`, `host = "app.example.com"`, `pool = "app"`)
	runProblemCases(t, []problemCase{
		{name: "every cluster key wrong at once",
			lines: tail(
				`[cluster]`,
				`redis_url = "http://user:hunter2@redis:6379/x?pool=3"`,
				`key_prefix = "my app:"`,
				`timeout = "0s"`,
				`lock_ttl = "100ms"`,
			),
			want: []want{
				{2, "cluster.redis_url", `unsupported scheme "http"`},
				{3, "cluster.key_prefix", "cannot contain spaces"},
				{4, "cluster.timeout", "must be between 1ms and 10s"},
				{5, "cluster.lock_ttl", "must be at least 1s"},
			}},
		{name: "bad database, parameter and addr; the password is not echoed",
			lines: tail(`[cluster]`, `redis_url = "redis://:hunter2@redis/x?pool=3&addr=nope"`, `timeout = "fast"`),
			want: []want{
				{2, "cluster.redis_url", `invalid database "x"`},
				{2, "cluster.redis_url", `addr="nope": want host:port`},
				{2, "cluster.redis_url", `unknown parameter "pool"`},
				{3, "cluster.timeout", `invalid duration "fast"`},
			}},
		{name: "missing URL",
			lines: tail(`[cluster]`, `key_prefix = "p:"`),
			want:  []want{{1, "cluster.redis_url", "missing"}}},
		{name: "password in the URL and in the environment",
			lines: tail(`[cluster]`, `redis_url = "redis://:pw@redis"`, `redis_password_env = "REDIS_PW"`),
			want:  []want{{3, "cluster.redis_password_env", "the password is given twice"}}},
		{name: "password variable not set is a warning, beside an error",
			lines: tail(`[cluster]`, `redis_url = "redis://redis"`, `redis_password_env = "PORTICO_TEST_UNSET_PASSWORD"`, `timeout = "1h"`),
			want: []want{
				{3, "cluster.redis_password_env", "warning: PORTICO_TEST_UNSET_PASSWORD is not set"},
				{4, "cluster.timeout", "must be between 1ms and 10s"},
			}},
		{name: "Redis Cluster has no database 1",
			lines: tail(`[cluster]`, `redis_url = "redis://n1:7000/1?addr=n2:7000"`),
			want:  []want{{2, "cluster.redis_url", "only database 0"}}},
		{name: "global scope without [cluster], bad scope and policy",
			lines: tail(
				`[middlewares.g]`, `type = "rate_limit"`, `rate = 1`, `scope = "global"`,
				`[middlewares.b]`, `type = "rate_limit"`, `rate = 1`, `scope = "cluster"`, `on_redis_error = "retry"`,
				`[middlewares.l]`, `type = "rate_limit"`, `rate = 1`, `on_redis_error = "deny"`,
			),
			want: []want{
				{4, "middlewares.g.scope", `"global" needs a shared Redis`},
				{8, "middlewares.b.scope", `unknown scope "cluster"`},
				{9, "middlewares.b.on_redis_error", `unknown value "retry"`},
				{13, "middlewares.l.on_redis_error", `applies to scope = "global" only`},
			}},
		{name: "ACME in Redis without [cluster], unknown storage",
			lines: lines(https, ls(`[tls.acme]`, `enabled = true`, `email = "ops@example.com"`, `storage = "redis"`), okPool, hostRoute),
			want:  []want{{6, "tls.acme.storage", `"redis" needs a shared Redis`}}},
		{name: "ACME storage unknown, cache_dir with redis",
			lines: lines(https, ls(`[tls.acme]`, `enabled = true`, `email = "ops@example.com"`, `storage = "s3"`), okPool, hostRoute),
			want:  []want{{6, "tls.acme.storage", `unknown storage "s3"`}}},
		{name: "cache_dir with storage redis",
			lines: lines(https, ls(`[tls.acme]`, `enabled = true`, `email = "ops@example.com"`, `storage = "redis"`, fmt.Sprintf(`cache_dir = %q`, f.writable), `[cluster]`, `redis_url = "redis://r"`), okPool, hostRoute),
			want:  []want{{7, "tls.acme.cache_dir", `applies to storage = "dir" only`}}},
	})
}
