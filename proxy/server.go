package proxy

import (
	"log/slog"
	"net/http"

	"github.com/portico/portico/config"
)

// NewServer returns the client-facing server for h with the configured
// limits: a slow client gets read_header_timeout to send its headers and
// idle_timeout between requests, and header blocks beyond max_header_bytes
// are refused with 431.
func NewServer(sc *config.Server, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: sc.ReadHeaderTimeout.Duration,
		IdleTimeout:       sc.IdleTimeout.Duration,
		MaxHeaderBytes:    sc.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}
