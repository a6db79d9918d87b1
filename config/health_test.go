package config

import (
	"fmt"
	"testing"
	"time"
)

func TestParseResilienceDefaults(t *testing.T) {
	cfg := parseOK(t, doc(
		`[pools.app]`,
		`backends = [{ url = "http://10.0.0.1:8080" }]`,
		`[pools.app.health]`,
		`[pools.plain]`,
		`backends = [{ url = "http://10.0.0.2:8080" }]`,
		`[[routes]]`,
		`pool = "app"`,
	))
	app, plain := cfg.Pools["app"], cfg.Pools["plain"]
	if plain.Health != nil {
		t.Errorf("a pool without [health] has Health %+v, want nil (no active checks)", plain.Health)
	}
	if app.Health == nil {
		t.Fatal("an empty [pools.app.health] table must enable checks with defaults")
	}
	h, p := app.Health, app.Passive
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"health.path", h.Path, "/healthz"},
		{"health.interval", h.Interval.Duration, 5 * time.Second},
		{"health.timeout", h.Timeout.Duration, 2 * time.Second},
		{"health.rise", h.Rise, 2},
		{"health.fall", h.Fall, 3},
		{"health.expect_status", h.ExpectStatus, "200-399"},
		{"health.statuses", fmt.Sprint(h.Statuses), "[{200 399}]"},
		{"health.expect_body", h.ExpectBody, ""},
		{"health.method", h.Method, "GET"},
		{"health.host", h.Host, ""},
		{"passive.max_fails", p.MaxFails, 3},
		{"passive.fail_timeout", p.FailTimeout.Duration, 10 * time.Second},
		{"passive.max_fail_timeout", p.MaxFailTimeout.Duration, 5 * time.Minute},
		{"passive.max_ejected_percent", p.MaxEjectedPercent, 50},
		{"passive.fail_on_5xx", p.FailOn5xx, false},
		{"panic_mode", app.PanicMode, false},
		{"max_conns", app.MaxConns, 0},
		{"queue_timeout", app.QueueTimeout.Duration, time.Second},
		{"retry_budget_percent", app.RetryBudgetPercent, 20},
		{"slow_start", app.SlowStart.Duration, time.Duration(0)},
		{"ewma_decay", app.EWMADecay.Duration, 10 * time.Second},
		{"plain passive.max_fails", plain.Passive.MaxFails, 3},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want default %v", c.name, c.got, c.want)
		}
	}
}

func TestParseResilienceExplicitValues(t *testing.T) {
	cfg := parseOK(t, doc(
		`[pools.app]`,
		`balance = "ewma"`,
		`backends = [{ url = "http://10.0.0.1:8080" }]`,
		`panic_mode = true`,
		`max_conns = 100`,
		`queue_timeout = "0s"`,
		`retry_budget_percent = 5`,
		`slow_start = "30s"`,
		`ewma_decay = "2s"`,
		`health = { path = "/up?full=1", interval = "1s", timeout = "1s", rise = 1, fall = 1, expect_status = "200, 204-206", expect_body = "ok", method = "OPTIONS", host = "app.internal:8080" }`,
		`passive = { max_fails = 0, fail_timeout = "1s", max_fail_timeout = "1s", max_ejected_percent = 0, fail_on_5xx = true }`,
		`[[routes]]`,
		`pool = "app"`,
	))
	app := cfg.Pools["app"]
	h, p := app.Health, app.Passive
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"balance", app.Balance, EWMA},
		{"panic_mode", app.PanicMode, true},
		{"max_conns", app.MaxConns, 100},
		{"queue_timeout", app.QueueTimeout.Duration, time.Duration(0)},
		{"retry_budget_percent", app.RetryBudgetPercent, 5},
		{"slow_start", app.SlowStart.Duration, 30 * time.Second},
		{"ewma_decay", app.EWMADecay.Duration, 2 * time.Second},
		{"health.path", h.Path, "/up?full=1"},
		{"health.interval", h.Interval.Duration, time.Second},
		{"health.timeout", h.Timeout.Duration, time.Second},
		{"health.rise", h.Rise, 1},
		{"health.fall", h.Fall, 1},
		{"health.statuses", fmt.Sprint(h.Statuses), "[{200 200} {204 206}]"},
		{"health.expect_body", h.ExpectBody, "ok"},
		{"health.method", h.Method, "OPTIONS"},
		{"health.host", h.Host, "app.internal:8080"},
		{"passive.max_fails", p.MaxFails, 0},
		{"passive.fail_timeout", p.FailTimeout.Duration, time.Second},
		{"passive.max_fail_timeout", p.MaxFailTimeout.Duration, time.Second},
		{"passive.max_ejected_percent", p.MaxEjectedPercent, 0},
		{"passive.fail_on_5xx", p.FailOn5xx, true},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// A short interval shortens the default timeout with it, so that an
// otherwise valid table never fails for a key it does not set.
func TestParseHealthTimeoutDefaultFollowsShortInterval(t *testing.T) {
	cfg := parseOK(t, doc(tail(`[pools.x]`, `backends = [{ url = "http://10.0.0.9:80" }]`, `health = { interval = "500ms" }`)...))
	if got := cfg.Pools["x"].Health.Timeout.Duration; got != 500*time.Millisecond {
		t.Errorf("timeout = %v, want 500ms", got)
	}
}

func TestHealthExpects(t *testing.T) {
	h := &Health{Statuses: []StatusRange{{200, 204}, {301, 301}}}
	for code, want := range map[int]bool{199: false, 200: true, 204: true, 205: false, 301: true, 302: false, 500: false} {
		if got := h.Expects(code); got != want {
			t.Errorf("Expects(%d) = %v, want %v", code, got, want)
		}
	}
}

// resilienceCases are documents whose pool (lines 1-2) is followed by the
// lines under test from line 3 on.
var resilienceCases = []struct {
	name  string
	lines []string
	want  []want
}{
	{"bad pool keys", ls(`balance = "p2c"`, `max_conns = -1`, `queue_timeout = "soon"`, `slow_start = "-1s"`, `ewma_decay = "0s"`, `retry_budget_percent = 0`),
		[]want{
			{3, "pools.app.balance", `unknown balance "p2c": want round_robin, least_conn or ewma`},
			{4, "pools.app.max_conns", "must be 0 (unlimited) or more, got -1"},
			{5, "pools.app.queue_timeout", `invalid duration "soon"`},
			{6, "pools.app.slow_start", `invalid duration "-1s"`},
			{7, "pools.app.ewma_decay", "must be more than zero"},
			{8, "pools.app.retry_budget_percent", "must be between 1 and 100, got 0"},
		}},
	{"bad passive keys", ls(`[pools.app.passive]`, `max_fails = -2`, `fail_timeout = "0s"`, `max_fail_timeout = "nope"`, `max_ejected_percent = 101`),
		[]want{
			{4, "pools.app.passive.max_fails", "must be 0 (off) or more, got -2"},
			{5, "pools.app.passive.fail_timeout", "must be more than zero"},
			{6, "pools.app.passive.max_fail_timeout", `invalid duration "nope"`},
			{7, "pools.app.passive.max_ejected_percent", "must be between 0 and 100, got 101"},
		}},
	{"cap shorter than fail_timeout", ls(`[pools.app.passive]`, `fail_timeout = "1m"`, `max_fail_timeout = "30s"`),
		[]want{{5, "pools.app.passive.max_fail_timeout", "must not be shorter than fail_timeout (1m0s)"}}},
	{"bad health keys", ls(`[pools.app.health]`, `path = "healthz"`, `interval = "0s"`, `timeout = "1 second"`, `rise = 0`, `fall = 101`, `expect_status = "2xx"`, `method = "POST"`, `host = "a b"`),
		[]want{
			{4, "pools.app.health.path", `"healthz" must be an absolute path`},
			{5, "pools.app.health.interval", "must be more than zero"},
			{6, "pools.app.health.timeout", `invalid duration "1 second"`},
			{7, "pools.app.health.rise", "must be between 1 and 100, got 0"},
			{8, "pools.app.health.fall", "must be between 1 and 100, got 101"},
			{9, "pools.app.health.expect_status", `"2xx": want a status or range`},
			{10, "pools.app.health.method", `unsupported method "POST"`},
			{11, "pools.app.health.host", `"a b" is not a host name`},
		}},
	{"timeout longer than interval, tiny interval", ls(`[pools.app.health]`, `interval = "5ms"`, `timeout = "1s"`),
		[]want{
			{4, "pools.app.health.interval", "must be at least 10ms, got 5ms"},
			{5, "pools.app.health.timeout", "must not be longer than interval (5ms)"},
		}},
	{"status range out of order, body with HEAD", ls(`[pools.app.health]`, `expect_status = "200,399-300"`, `method = "HEAD"`, `expect_body = "ok"`),
		[]want{{4, "pools.app.health.expect_status", "ascending ranges within 100-599"}, {6, "pools.app.health.expect_body", "method HEAD"}}},
	{"status outside HTTP", ls(`[pools.app.health]`, `expect_status = "99-200"`),
		[]want{{4, "pools.app.health.expect_status", "ascending ranges within 100-599"}}},
	{"unknown health key", ls(`[pools.app.health]`, `intervall = "1s"`),
		[]want{{4, "pools.app.health.intervall", "unknown key"}}},
}

func TestParseResilienceValidationErrors(t *testing.T) {
	for _, tc := range resilienceCases {
		t.Run(tc.name, func(t *testing.T) {
			src := doc(lines(okPool, tc.lines, okRoute)...)
			_, err := Parse([]byte(src), "test.toml")
			if diff := checkProblems(problemsOf(t, err), tc.want); diff != "" {
				t.Errorf("%s\ndocument:\n%s", diff, src)
			}
		})
	}
}
