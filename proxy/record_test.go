package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portico/portico/reqinfo"
)

func TestRecorderKeepsFinalStatusAndCountsBytes(t *testing.T) {
	info := &reqinfo.Info{}
	rec := &recorder{ResponseWriter: nopWriter{}, info: info}
	rec.WriteHeader(http.StatusContinue) // interim: not the answer
	rec.WriteHeader(http.StatusCreated)
	_, _ = rec.Write([]byte("hello"))
	_, _ = rec.Write([]byte(" world"))
	if info.Status != http.StatusCreated || info.BytesOut != 11 {
		t.Errorf("status %d, bytes %d; want 201, 11", info.Status, info.BytesOut)
	}

	info = &reqinfo.Info{}
	rec = &recorder{ResponseWriter: nopWriter{}, info: info}
	_, _ = rec.Write([]byte("x")) // an implicit 200
	if info.Status != http.StatusOK || info.BytesOut != 1 {
		t.Errorf("implicit: status %d, bytes %d; want 200, 1", info.Status, info.BytesOut)
	}
}

// nopWriter accepts everything; httptest.ResponseRecorder would take a 1xx
// for the final status.
type nopWriter struct{}

func (nopWriter) Header() http.Header         { return http.Header{} }
func (nopWriter) WriteHeader(int)             {}
func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

// TestRequestRecordFilledIn follows one proxied request and one unrouted
// request through Handler and checks what their records say afterwards.
func TestRequestRecordFilledIn(t *testing.T) {
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, strings.Repeat("a", 1000))
	})
	cfg := parseConfig(t, `
[pools.p]
backends = [{ url = "${be}" }]
[[routes]]
name = "api-route"
host = "api.test"
pool = "p"
`, map[string]string{"be": be.URL})
	snap, err := NewSnapshot(cfg, discardLog)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	var got []*reqinfo.Info
	for _, rs := range snap.routes.exact {
		for _, rt := range rs {
			next := rt.handler
			rt.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got = append(got, reqinfo.From(r.Context()))
				next.ServeHTTP(w, r)
			})
		}
	}
	h := NewHandler(snap)

	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "http://api.test/x", nil))
	if w.Code != http.StatusAccepted || len(got) != 1 {
		t.Fatalf("status %d, %d records seen by the route; want 202, 1", w.Code, len(got))
	}
	ri := got[0]
	wantBackend := strings.TrimPrefix(be.URL, "http://")
	if ri.Route != "api-route" || ri.Pool != "p" || ri.Backend != wantBackend || ri.Attempts != 1 ||
		ri.Status != http.StatusAccepted || ri.BytesOut != 1000 || ri.Start.IsZero() || ri.BackendTTFB <= 0 {
		t.Errorf("record = %+v; want route api-route, pool p, backend %s, 1 attempt, status 202, 1000 bytes, start and TTFB set", *ri, wantBackend)
	}

	// Request body bytes are counted as the backend transport reads them.
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "http://api.test/x", strings.NewReader(strings.Repeat("b", 300))))
	if len(got) != 2 || got[1].BytesIn != 300 {
		t.Fatalf("POST of 300 bytes: %d records, last %+v; want BytesIn 300", len(got), *got[len(got)-1])
	}

	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "http://other.test/x", nil))
	if w.Code != http.StatusNotFound || len(got) != 2 {
		t.Fatalf("unrouted: status %d, %d records; want 404 and no route handler call", w.Code, len(got))
	}
}
