// Package compress is the "compress" middleware: responses encoded with
// zstd, brotli or gzip for clients that accept it. It is its own package
// because it brings its own libraries (klauspost/compress, brotli).
//
// A response is encoded when the client accepts one of the configured
// encodings, its status is 2xx (not 204 or 206), its Content-Type is one of
// the configured types, its length is unknown or at least min_length, the
// backend did not encode it already, did not forbid it (Cache-Control:
// no-transform), and the request asked for no range. Every response such
// rules could apply to gets "Vary: Accept-Encoding"; an encoded one loses
// Content-Length and Accept-Ranges and has its ETag weakened, since its
// bytes differ from the backend's. Flushes go through the encoder, so
// server-sent events arrive event by event.
package compress

import (
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/portico/portico/config"
)

type compressor struct {
	prefs     []*encoding
	exact     map[string]bool // media types
	prefixes  []string        // "text/" for "text/*"
	minLength int64
}

// New returns the middleware for validated options.
func New(o *config.Compress) func(http.Handler) http.Handler {
	c := &compressor{exact: map[string]bool{}, minLength: int64(o.MinLength)}
	for _, name := range o.Encodings {
		c.prefs = append(c.prefs, encodings[name])
	}
	for _, t := range o.Types {
		if p, ok := strings.CutSuffix(strings.ToLower(t), "*"); ok {
			c.prefixes = append(c.prefixes, p)
		} else {
			c.exact[strings.ToLower(t)] = true
		}
	}
	return c.wrap
}

var writers = sync.Pool{New: func() any { return new(writer) }}

func (c *compressor) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead || r.Header["Range"] != nil {
			next.ServeHTTP(w, r)
			return
		}
		cw := writers.Get().(*writer)
		*cw = writer{ResponseWriter: w, c: c, enc: negotiate(r.Header["Accept-Encoding"], c.prefs)}
		defer func() {
			cw.finish()
			*cw = writer{}
			writers.Put(cw)
		}()
		next.ServeHTTP(cw, r)
	})
}

// compressible reports whether the rules allow encoding a response with
// this status and these headers, whatever the client accepts.
func (c *compressor) compressible(code int, h http.Header) bool {
	if code < 200 || code > 299 || code == http.StatusNoContent || code == http.StatusPartialContent {
		return false
	}
	if len(h["Content-Encoding"]) > 0 {
		return false
	}
	for _, v := range h["Cache-Control"] {
		if containsToken(v, "no-transform") {
			return false
		}
	}
	if cl := h["Content-Length"]; len(cl) > 0 {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n < c.minLength {
			return false
		}
	}
	ct := h["Content-Type"]
	if len(ct) == 0 {
		return false
	}
	mt, _, _ := strings.Cut(ct[0], ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	if c.exact[mt] {
		return true
	}
	for _, p := range c.prefixes {
		if strings.HasPrefix(mt, p) {
			return true
		}
	}
	return false
}

func containsToken(list, token string) bool {
	for list != "" {
		var t string
		t, list, _ = strings.Cut(list, ",")
		if t, _, _ = strings.Cut(t, "="); strings.EqualFold(strings.TrimSpace(t), token) {
			return true
		}
	}
	return false
}

// writer decides at the response header whether to encode, and then sends
// the body through the encoder.
type writer struct {
	http.ResponseWriter
	c       *compressor
	enc     *encoding // what the client accepts; nil: none
	decided bool
	e       encoder // encoding the body; nil: passing it through
}

func (w *writer) WriteHeader(code int) {
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(code) // 1xx: interim, decide nothing
		return
	}
	if !w.decided {
		w.decide(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *writer) decide(code int) {
	w.decided = true
	h := w.ResponseWriter.Header()
	if !w.c.compressible(code, h) {
		return
	}
	if !containsToken(strings.Join(h["Vary"], ","), "Accept-Encoding") {
		h["Vary"] = append(h["Vary"], "Accept-Encoding")
	}
	if w.enc == nil {
		return
	}
	delete(h, "Content-Length")
	delete(h, "Accept-Ranges")
	h["Content-Encoding"] = []string{w.enc.name}
	if et := h["Etag"]; len(et) == 1 && !strings.HasPrefix(et[0], "W/") {
		h["Etag"] = []string{"W/" + et[0]}
	}
	w.e = w.enc.get(w.ResponseWriter)
}

func (w *writer) Write(p []byte) (int, error) {
	if !w.decided {
		w.WriteHeader(http.StatusOK)
	}
	if w.e != nil {
		return w.e.Write(p)
	}
	return w.ResponseWriter.Write(p)
}

// FlushError pushes what the encoder holds to the client, then flushes the
// connection: each server-sent event arrives when it is written.
func (w *writer) FlushError() error {
	if !w.decided {
		w.WriteHeader(http.StatusOK)
	}
	if w.e != nil {
		if err := w.e.Flush(); err != nil {
			return err
		}
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush is FlushError for callers that look for http.Flusher.
func (w *writer) Flush() { _ = w.FlushError() }

// Unwrap lets http.ResponseController reach Hijack and deadlines.
func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// finish ends the encoded stream and returns the encoder to its pool.
func (w *writer) finish() {
	if w.e != nil {
		_ = w.e.Close()
		w.enc.put(w.e)
	}
}
