package proxy

import (
	"net/http"

	"github.com/portico/portico/reqinfo"
)

// recorder notes the status and body size sent to the client in the
// request's record, for the access log and metrics. Interim 1xx answers are
// passed on without being taken for the final status.
type recorder struct {
	http.ResponseWriter
	info *reqinfo.Info
}

func (w *recorder) WriteHeader(code int) {
	if w.info.Status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.info.Status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(p []byte) (int, error) {
	if w.info.Status == 0 {
		w.info.Status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.info.BytesOut += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush, Hijack and deadlines.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// infoFrom is reqinfo.From for code that only runs under Handler; outside it
// (a forwarder tested on its own) it returns a record nobody reads.
func infoFrom(r *http.Request) *reqinfo.Info {
	if ri := reqinfo.From(r.Context()); ri != nil {
		return ri
	}
	return &reqinfo.Info{}
}
