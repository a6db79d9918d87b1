package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portico/portico/config"
)

func TestConfigEndpoints(t *testing.T) {
	cfg, err := config.Parse([]byte("[server]\nadmin_token = \"0123456789abcdef-secret\"\n[pools.app]\nbackends = [{ url = \"http://10.0.0.1:80\" }]\n[[routes]]\npool = \"app\"\n"), "p.toml")
	if err != nil {
		t.Fatal(err)
	}
	result := ReloadResult{OK: true, File: "p.toml", Changes: []config.Change{{Section: "backends", Item: "app http://10.0.0.3:80", Op: "+"}}}
	reloads := 0
	h := Handler(Options{
		Config: func() *config.Config { return cfg },
		Reload: func() ReloadResult { reloads++; return result },
	})

	code, body := get(t, h, "/api/config")
	var run RunningConfig
	if err := json.Unmarshal([]byte(body), &run); err != nil || code != 200 {
		t.Fatalf("GET /api/config: %d %v\n%s", code, err, body)
	}
	if run.File != "p.toml" || run.SHA256 != cfg.Checksum || run.Settings["backends"]["app http://10.0.0.1:80"]["weight"] != "1" {
		t.Errorf("GET /api/config: %+v", run)
	}
	if tok := run.Settings["server"]["server"]["admin_token"]; tok == "" || strings.Contains(body, "0123456789abcdef-secret") {
		t.Errorf("admin_token shown as %q in %s", tok, body)
	}

	post := func(origin string) (int, ReloadResult) {
		req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:9090/api/reload", nil)
		if origin != "" {
			req.Header.Set("Origin", origin)
			req.Header.Set("Sec-Fetch-Site", "cross-site")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var res ReloadResult
		_ = json.Unmarshal(rec.Body.Bytes(), &res)
		return rec.Code, res
	}
	for _, tc := range []struct {
		name   string
		result ReloadResult
		status int
	}{
		{"reloaded", result, http.StatusOK},
		{"invalid file", ReloadResult{File: "p.toml", Errors: []string{"p.toml:3: routes[0].pool: no pool named \"x\""}}, http.StatusUnprocessableEntity},
		{"no file", ReloadResult{Errors: []string{"running the built-in quickstart"}}, http.StatusConflict},
	} {
		result = tc.result
		code, res := post("")
		if code != tc.status || res.OK != tc.result.OK || len(res.Errors) != len(tc.result.Errors) || len(res.Changes) != len(tc.result.Changes) {
			t.Errorf("%s: %d %+v, want %d %+v", tc.name, code, res, tc.status, tc.result)
		}
	}
	n := reloads
	if code, _ := post("https://evil.example"); code != http.StatusForbidden || reloads != n {
		t.Errorf("cross-origin POST: %d, %d reloads; want 403 and none", code, reloads-n)
	}
	if code, _ := get(t, h, "/api/reload"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/reload: %d, want 405", code)
	}
	if code, _ := get(t, Handler(Options{}), "/api/reload"); code != http.StatusNotFound {
		t.Errorf("/api/reload without Reload: %d, want 404", code)
	}
}
