package proxy

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/portico/portico/balancer"
	"github.com/portico/portico/proxy/h1"
	"github.com/portico/portico/reqinfo"
)

// roundTrip makes one attempt through net/http's transport, for backends
// that speak HTTP/2 (h2c://, and https:// backends that chose h2 in ALPN).
func (f *forwarder) roundTrip(w http.ResponseWriter, o *outbound, b *balancer.Backend, start time.Time, info *reqinfo.Info) error {
	r := o.r
	var (
		mu   sync.Mutex
		done bool
	)
	trace := &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			mu.Lock()
			defer mu.Unlock()
			// The transport may call this until RoundTrip returns; HTTP/1.0
			// has no interim responses.
			if !done && r.ProtoAtLeast(1, 1) {
				relay1xxHeader(w, code, http.Header(h))
			}
			return nil
		},
	}
	ts := f.up.conns[b.Index()]
	out := &http.Request{
		Method:     r.Method,
		URL:        &url.URL{Scheme: ts.scheme, Host: b.URL().Host, Path: o.upath, RawPath: o.rawPath, RawQuery: o.query},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     o.header(),
		Host:       r.Host,
		Trailer:    r.Trailer,
	}
	out = out.WithContext(httptrace.WithClientTrace(r.Context(), trace))
	switch {
	case o.small != nil:
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(o.small[:o.length])), o.length
	case o.body != nil:
		// Close does nothing: a transport closes the body of a failed
		// attempt, and a retry, or the server, still needs it.
		out.Body, out.ContentLength = io.NopCloser(o.body), o.length
	}
	res, err := ts.rt.RoundTrip(out)
	mu.Lock()
	done = true
	mu.Unlock()
	if err != nil {
		f.up.failed(b, o, start, err)
		return err
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusSwitchingProtocols {
		// HTTP/2 has no upgrades; upgrades go to HTTP/1.1 connections.
		return errWrongUpgrade
	}
	f.up.answered(b, res.StatusCode, start, info)

	hdr := w.Header()
	conn := res.Header["Connection"]
	for k, vs := range res.Header {
		if h1.IsHopByHop(k) || len(conn) > 0 && httpguts.HeaderValuesContainsToken(conn, k) {
			continue
		}
		hdr[k] = append(hdr[k], vs...)
	}
	if o.bodyUnfinished() {
		hdr["Connection"] = connClose
	}
	announced := make([]string, 0, len(res.Trailer))
	for k := range res.Trailer {
		announced = append(announced, k)
	}
	trailers := len(announced) > 0
	if trailers {
		hdr["Trailer"] = []string{strings.Join(announced, ", ")}
	}
	if err := respond(w, res.StatusCode, res.Body, res.ContentLength < 0 || isEventStream(hdr), trailers); err != nil {
		return errAborted
	}
	_ = res.Body.Close() // fills res.Trailer
	for k, vs := range res.Trailer {
		if !containsString(announced, k) {
			k = http.TrailerPrefix + k
		}
		hdr[k] = append(hdr[k], vs...)
	}
	return nil
}

func containsString(ss []string, s string) bool {
	for _, v := range ss {
		if v == s {
			return true
		}
	}
	return false
}

// relay1xxHeader passes an interim response on. The client gets the fields
// in w.Header() with the 1xx's own added; afterwards the header is as it
// was, for the final response.
func relay1xxHeader(w http.ResponseWriter, status int, h1xx http.Header) {
	h := w.Header()
	prev := make(map[string][]string, len(h1xx))
	for k, vs := range h1xx {
		old := h[k]
		prev[k] = old
		h[k] = append(old[:len(old):len(old)], vs...)
	}
	w.WriteHeader(status)
	for k, v := range prev {
		if v == nil {
			delete(h, k)
		} else {
			h[k] = v
		}
	}
}
