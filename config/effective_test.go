package config

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/portico/portico/internal/testcert"
)

func summaries(cs []Change) string {
	var lines []string
	for _, c := range cs {
		lines = append(lines, c.Summary())
	}
	return strings.Join(lines, "\n")
}

// Diff names every item added, removed or changed, with old and new values,
// in a fixed order; identical configurations differ in nothing.
func TestDiffListsChangesBySectionItemAndKey(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	certFile, keyFile := ca.Valid(t, "a.example.com").WriteFiles(t, dir, "a")
	before := parseOK(t, doc(
		`[server]`,
		`http_addr = "127.0.0.1:8080"`,
		`https_addr = "127.0.0.1:8443"`,
		`[[tls.certificates]]`,
		`cert_file = "`+certFile+`"`,
		`key_file = "`+keyFile+`"`,
		`[pools.app]`,
		`backends = [{ url = "http://10.0.0.1:80" }, { url = "http://10.0.0.2:80" }]`,
		`[pools.old]`,
		`backends = [{ url = "http://10.0.1.1:80" }]`,
		`[[routes]]`,
		`pool = "app"`,
		`[[routes]]`,
		`path_prefix = "/old"`,
		`pool = "old"`,
	))
	if d := Diff(before.Settings(), before.Settings()); len(d) != 0 {
		t.Fatalf("a configuration differs from itself: %s", summaries(d))
	}
	// The certificate file is renewed in place: same path, new certificate.
	ca.Valid(t, "a.example.com").WriteFiles(t, dir, "a")
	after := parseOK(t, doc(
		`[server]`,
		`http_addr = "127.0.0.1:8081"`,
		`https_addr = "127.0.0.1:8443"`,
		`idle_timeout = "30s"`,
		`[[tls.certificates]]`,
		`cert_file = "`+certFile+`"`,
		`key_file = "`+keyFile+`"`,
		`[pools.app]`,
		`backends = [{ url = "http://10.0.0.2:80", weight = 3 }, { url = "http://10.0.0.3:80" }]`,
		`health = { path = "/up" }`,
		`[pools.new]`,
		`backends = [{ url = "http://10.0.2.1:80" }]`,
		`[[routes]]`,
		`pool = "new"`,
	))
	d := Diff(before.Settings(), after.Settings())
	got := summaries(d)
	for _, want := range []string{
		`~ listeners http: addr: "127.0.0.1:8080" -> "127.0.0.1:8081"`,
		`~ server server: http2.idle_timeout: "2m0s" -> "30s", idle_timeout: "2m0s" -> "30s"`,
		`~ certificates ` + certFile + `: sha256: `,
		`~ routes /: pool: "app" -> "new"`,
		`- routes /old`,
		`~ pools app: health.expect_body = ""`,
		`health.path = "/up"`,
		`+ pools new`,
		`- pools old`,
		`+ backends app http://10.0.0.3:80`,
		`- backends app http://10.0.0.1:80`,
		`~ backends app http://10.0.0.2:80: weight: 1 -> 3`,
		`- backends old http://10.0.1.1:80`,
		`+ backends new http://10.0.2.1:80`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("diff lacks %q:\n%s", want, got)
		}
	}
	order := []string{"listeners", "server", "certificates", "routes", "pools", "backends"}
	last := -1
	for _, c := range d {
		i := strings.Index(strings.Join(order, " "), c.Section)
		if i < last {
			t.Errorf("section %s out of order:\n%s", c.Section, got)
		}
		last = i
	}
	for _, c := range d {
		if c.Op == "+" && c.Section == "pools" && len(c.Keys) < 10 {
			t.Errorf("an added pool lists %d settings, want all of them, defaults included", len(c.Keys))
		}
	}
}

// Settings survive the JSON of the admin API unchanged, so that a diff
// against a running instance compares like with like.
func TestSettingsRoundTripJSON(t *testing.T) {
	cfg, err := Load("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(cfg.Settings())
	if err != nil {
		t.Fatal(err)
	}
	var back Settings
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if d := Diff(cfg.Settings(), back); len(d) != 0 {
		t.Errorf("differs after JSON: %s", summaries(d))
	}
	if back["tls"]["tls"]["acme.email"] != `"ops@example.com"` || back["pools"]["app"]["health.interval"] != `"5s"` {
		t.Errorf("settings lack nested keys: %v", back["pools"]["app"])
	}
}

// Secrets are shown as a short hash: enough to see that one changed, never
// the value.
func TestSettingsHideSecrets(t *testing.T) {
	type auth struct {
		User     string `toml:"user"`
		Password string `toml:"password"`
		Key      string `toml:"key" secret:"true"`
	}
	type table struct {
		Auth       auth   `toml:"auth"`
		AdminToken string `toml:"admin_token"`
		Timeout    Duration
	}
	kv := flat(table{Auth: auth{User: "ops", Password: "hunter2", Key: "k3y"}, AdminToken: "s3cret"})
	for k, v := range kv {
		for _, secret := range []string{"hunter2", "k3y", "s3cret"} {
			if strings.Contains(v, secret) {
				t.Errorf("%s = %s shows a secret", k, v)
			}
		}
	}
	if kv["auth.user"] != `"ops"` || !strings.HasPrefix(kv["auth.password"], `"(secret, sha256 `) || !strings.HasPrefix(kv["admin_token"], `"(secret`) || !strings.HasPrefix(kv["auth.key"], `"(secret`) {
		t.Errorf("flattened: %v", kv)
	}
	other := flat(table{Auth: auth{Password: "hunter3"}})
	if other["auth.password"] == kv["auth.password"] {
		t.Error("a changed secret looks the same")
	}
}

// Problem places a problem found after validation at its key's line.
func TestConfigProblemHasTheKeysLine(t *testing.T) {
	cfg := parseOK(t, doc(
		`[pools.app]`,
		`backends = [{ url = "http://10.0.0.1:80" }]`,
		`[server]`,
		`http_addr = "127.0.0.1:1"`,
		`[[routes]]`,
		`pool = "app"`,
	))
	p := cfg.Problem("server.http_addr", "cannot listen: %s", "address already in use")
	if got, want := p.Error(), "test.toml:4: server.http_addr: cannot listen: address already in use"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if p := cfg.Problem("server.https_addr", "x"); p.Line != 3 {
		t.Errorf("an unwritten key's problem is on line %d, want its table's (3)", p.Line)
	}
}

// Middlewares are compared by name: their type and options, with
// credentials shown only as a hash.
func TestDiffListsMiddlewares(t *testing.T) {
	doc := func(rate, hash string) string {
		return doc(
			`[middlewares.limit]`,
			`type = "rate_limit"`,
			`rate = "`+rate+`"`,
			`[middlewares.login]`,
			`type = "basic_auth"`,
			`users = { ops = "`+hash+`" }`,
			`[pools.app]`,
			`backends = [{ url = "http://10.0.0.1:80" }]`,
			`[[routes]]`,
			`pool = "app"`,
			`middlewares = ["limit", "login"]`,
		)
	}
	const h1 = "$2a$10$C6UzMDM.H6dfI/f/IKxGhu1Qvz2vZpX6gRgu6/0RvFkQZ0k2rXy4e"
	const h2 = "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"
	before, after := parseOK(t, doc("10/s", h1)), parseOK(t, doc("20/s", h2))
	got := summaries(Diff(before.Settings(), after.Settings()))
	for _, want := range []string{`~ middlewares limit: burst: 10 -> 20, rate: PerSecond=10 -> PerSecond=20`, `~ middlewares login: users: "(secret, sha256 `} {
		if !strings.Contains(got, want) {
			t.Errorf("diff lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, h1) || strings.Contains(got, h2) {
		t.Errorf("diff shows a password hash:\n%s", got)
	}
}

// Credentials written where no key name says "secret" are hidden too: a
// header rule's value whose name says what it is however it is spelled
// (X-Api-Key as well as api_key), and the password of a URL such as
// jwks_url (user:password@host), which shows as "xxxxx". A change to
// either still shows as a change.
func TestSettingsHideHeaderCredentialsAndURLPasswords(t *testing.T) {
	doc := func(key, token, password string) string {
		return doc(
			`[cluster]`,
			`redis_url = "redis://portico:`+password+`@10.0.0.9:6379/0"`,
			`[middlewares.upstream]`,
			`type = "headers"`,
			`request_set = { X-Api-Key = "`+key+`", Private-Token = "`+token+`", X-Env = "prod" }`,
			`[middlewares.idp]`,
			`type = "jwt"`,
			`jwks_url = "https://portico:`+password+`@idp.example.com/jwks.json"`,
			`algorithms = ["RS256"]`,
			`[pools.app]`,
			`backends = [{ url = "http://10.0.0.1:80" }]`,
			`[[routes]]`,
			`pool = "app"`,
			`middlewares = ["upstream", "idp"]`,
		)
	}
	before := parseOK(t, doc("k-123-secret", "p-789-token", "pw-0987")).Settings()
	after := parseOK(t, doc("k-124-secret", "p-789-token", "pw-0988")).Settings()
	js, err := json.Marshal(before)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"k-123-secret", "p-789-token", "pw-0987"} {
		if strings.Contains(string(js), secret) {
			t.Errorf("settings show %q:\n%s", secret, js)
		}
	}
	mw := before["middlewares"]
	if got := mw["upstream"]["request_set.X-Env"]; got != `"prod"` {
		t.Errorf("request_set.X-Env = %s, want \"prod\" as it is", got)
	}
	if got := mw["idp"]["jwks_url"]; !strings.Contains(got, "https://portico:xxxxx@idp.example.com/jwks.json") {
		t.Errorf("jwks_url = %s, want it with the password as xxxxx", got)
	}
	got := summaries(Diff(before, after))
	for _, want := range []string{"request_set.X-Api-Key: ", "jwks_url: ", "redis_url: "} {
		if !strings.Contains(got, want) {
			t.Errorf("diff lacks a change of %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "Private-Token") {
		t.Errorf("diff shows an unchanged secret as changed:\n%s", got)
	}
}
