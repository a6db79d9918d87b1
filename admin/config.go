package admin

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/portico/portico/config"
)

// ConfigAPI is what the configuration endpoints need from the process:
// GET /api/config shows the configuration in force, POST /api/reload
// reloads it from its file (what SIGHUP does) and says what changed or
// why nothing did.
type ConfigAPI struct {
	Running func() RunningConfig
	Reload  func() ReloadResult
}

// RunningConfig is the answer of GET /api/config: the settings in force,
// defaults included and secrets hidden, in the form config.Diff compares.
type RunningConfig struct {
	File     string          `json:"file"` // "" when running the built-in quickstart
	LoadedAt time.Time       `json:"loaded_at"`
	Settings config.Settings `json:"settings"`
}

// ReloadResult is the answer of POST /api/reload. A refused reload changes
// nothing; Errors says why, each problem as FILE:LINE: key: message.
type ReloadResult struct {
	OK      bool            `json:"ok"`
	File    string          `json:"file"`
	Changes []config.Change `json:"changes,omitempty"`
	Errors  []string        `json:"errors,omitempty"`
}

func configRoutes(mux *http.ServeMux, api *ConfigAPI) {
	mux.HandleFunc("GET /api/config", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, api.Running())
	})
	// A browser page elsewhere must not make an operator's browser reload
	// Portico: cross-origin POSTs are refused.
	reload := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		res := api.Reload()
		status := http.StatusOK
		switch {
		case res.OK:
		case res.File == "":
			status = http.StatusConflict // the quickstart has no file to reload
		default:
			status = http.StatusUnprocessableEntity
		}
		writeJSON(w, status, res)
	})
	mux.Handle("POST /api/reload", http.NewCrossOriginProtection().Handler(reload))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
