package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/portico/portico/reqinfo"
)

// stripPrefix removes the route prefix from the outbound path, keeping the
// path absolute. The escaped form is trimmed alike, or dropped if it differs.
func stripPrefix(u *url.URL, prefix string) {
	prefix = strings.TrimSuffix(prefix, "/")
	u.Path = ensureSlash(strings.TrimPrefix(u.Path, prefix))
	if u.RawPath != "" {
		if strings.HasPrefix(u.RawPath, prefix) {
			u.RawPath = ensureSlash(strings.TrimPrefix(u.RawPath, prefix))
		} else {
			u.RawPath = ""
		}
	}
}

func ensureSlash(p string) string {
	if !strings.HasPrefix(p, "/") {
		return "/" + p
	}
	return p
}

// errorHandler answers a failed forward with a short plain-text status; the
// cause, which may name internal addresses, goes only to the log.
func errorHandler(log *slog.Logger) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		info := infoFrom(r)
		if b := bodyOf(r); b != nil && b.failed() != 0 {
			// The client's fault, whatever the transport made of it.
			status := b.failed()
			info.Status = status
			log.Info("client request body failed", "request_id", info.RequestID, "route", info.Route, "pool", info.Pool,
				"backend", info.Backend, "status", status, "err", err)
			refuse(w, r, status)
			return
		}
		if r.Context().Err() != nil {
			// The client went away; nobody is left to answer.
			info.Status = reqinfo.StatusClientClosed
			log.Debug("client closed request", "request_id", info.RequestID, "route", info.Route, "backend", info.Backend, "err", err)
			return
		}
		status := statusFor(err)
		info.Status = status
		log.Warn("backend request failed", "request_id", info.RequestID, "route", info.Route, "pool", info.Pool,
			"backend", info.Backend, "attempts", info.Attempts, "status", status, "err", err)
		setRetryAfter(w.Header(), err)
		if b := bodyOf(r); b != nil && !b.done() && r.ProtoMajor == 1 {
			// The client's body was not read to its end: see checkResponse.
			w.Header()["Connection"] = connClose
		}
		writeError(w, status)
	}
}

func statusFor(err error) int {
	var ne net.Error
	switch {
	case errors.As(err, new(*unavailable)):
		return http.StatusServiceUnavailable
	case errors.As(err, new(dialError)):
		return http.StatusBadGateway
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

func writeError(w http.ResponseWriter, status int) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(strings.ToLower(http.StatusText(status)) + "\n"))
}
