package admin

import (
	"net/http"

	"github.com/portico/portico/config"
)

// RunningConfig is the answer of GET /api/config: the settings in force,
// defaults included and secrets hidden, in the form config.Diff compares,
// which is what `portico validate -diff` does with them.
type RunningConfig struct {
	File     string          `json:"file"` // "quickstart.toml" for the built-in quickstart
	SHA256   string          `json:"sha256"`
	Settings config.Settings `json:"settings"`
}

// ReloadResult is the answer of POST /api/reload. A refused reload changes
// nothing; Errors says why, each problem as FILE:LINE: key: message.
type ReloadResult struct {
	OK      bool            `json:"ok"`
	File    string          `json:"file"` // "" when there is no file to reload from
	Changes []config.Change `json:"changes,omitempty"`
	Errors  []string        `json:"errors,omitempty"`
}

// configRoutes serves GET /api/config and, with o.Reload, POST
// /api/reload, which reloads the configuration from its file as SIGHUP
// does and says what changed or why nothing did.
func (o *Options) configRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/config", func(w http.ResponseWriter, _ *http.Request) {
		cfg := o.config()
		if cfg == nil {
			text(w, http.StatusServiceUnavailable, "no configuration in force")
			return
		}
		writeJSON(w, http.StatusOK, RunningConfig{File: cfg.File, SHA256: cfg.Checksum, Settings: cfg.Settings()})
	})
	if o.Reload == nil {
		return
	}
	reload := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		res := o.Reload()
		status := http.StatusOK
		switch {
		case res.OK:
		case res.File == "":
			status = http.StatusConflict // nothing to reload from
		default:
			status = http.StatusUnprocessableEntity
		}
		writeJSON(w, status, res)
	})
	// A page elsewhere must not make an operator's browser reload Portico:
	// cross-origin POSTs are refused.
	mux.Handle("POST /api/reload", http.NewCrossOriginProtection().Handler(reload))
}
