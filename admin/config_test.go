package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/portico/portico/balancer"
	"github.com/portico/portico/config"
)

func TestConfigEndpoints(t *testing.T) {
	loaded := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	result := ReloadResult{OK: true, File: "p.toml", Changes: []config.Change{{Section: "backends", Item: "app http://10.0.0.3:80", Op: "+"}}}
	reloads := 0
	api := &ConfigAPI{
		Running: func() RunningConfig {
			return RunningConfig{File: "p.toml", LoadedAt: loaded, Settings: config.Settings{"listeners": {"http": {"addr": `":80"`}}}}
		},
		Reload: func() ReloadResult { reloads++; return result },
	}
	h := Handler(func() []*balancer.Pool { return nil }, api)

	code, body := get(t, h, "/api/config")
	var run RunningConfig
	if err := json.Unmarshal([]byte(body), &run); err != nil || code != 200 {
		t.Fatalf("GET /api/config: %d %v\n%s", code, err, body)
	}
	if run.File != "p.toml" || !run.LoadedAt.Equal(loaded) || run.Settings["listeners"]["http"]["addr"] != `":80"` {
		t.Errorf("GET /api/config: %+v", run)
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
		{"quickstart", ReloadResult{Errors: []string{"running the built-in quickstart"}}, http.StatusConflict},
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
}
