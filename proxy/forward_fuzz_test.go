package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// FuzzForwardRewrite sends any request net/http's server would accept,
// from a trusted or an untrusted peer, through Portico to a backend and
// checks what the backend received: no hop-by-hop header and no header named
// in Connection, an X-Forwarded-* set that an untrusted peer cannot forge
// and a trusted one extends, no "Upgrade: h2c", and a path without dot
// segments. Seeds are in testdata/fuzz/FuzzForwardRewrite.
func FuzzForwardRewrite(f *testing.F) {
	// What the backend got, by the X-Fuzz-Id each run adds: a backend
	// handler can outlive the run that sent its request.
	var seen sync.Map
	var runs atomic.Int64
	b := startBackend(f, func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("X-Fuzz-Id"), r)
		_, _ = io.Copy(io.Discard, r.Body)
	})
	p := startProxy(f, "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n[pools.p]\nbackends = [{ url = \""+b.URL+"\" }]\n"+
		"[[routes]]\npool = \"p\"\n[[routes]]\npool = \"p\"\npath_prefix = \"/strip\"\nstrip_prefix = true\n", nil)
	h := NewHandler(p.Snap)

	f.Fuzz(func(t *testing.T, raw []byte, trusted bool) {
		in, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil || !acceptedByServer(raw, in) {
			return
		}
		peer := "192.0.2.1"
		if trusted {
			peer = "10.0.0.1"
		}
		in.RemoteAddr = peer + ":40000"
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		in = in.WithContext(ctx)
		id := strconv.FormatInt(runs.Add(1), 10)
		in.Header.Set("X-Fuzz-Id", id)
		// What the proxy may change in place must not blur what was sent.
		sent := in.Header.Clone()

		h.ServeHTTP(httptest.NewRecorder(), in)
		v, ok := seen.LoadAndDelete(id)
		if !ok {
			return // refused, the body broke first, or X-Fuzz-Id was named in Connection
		}
		got := v.(*http.Request)
		checkForwarded(t, sent, in.Host, peer, trusted, got)
		if needsCleaning(got.URL.Path) || !strings.HasPrefix(got.URL.Path, "/") {
			t.Errorf("backend got path %q from %q", got.URL.Path, in.RequestURI)
		}
	})
}

// acceptedByServer applies the checks net/http's server makes beyond
// ReadRequest to r, read from raw: ReadRequest drops the Host fields, so
// they are read again.
func acceptedByServer(raw []byte, r *http.Request) bool {
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
	if _, err := tp.ReadLine(); err != nil {
		return false
	}
	header, err := tp.ReadMIMEHeader()
	if err != nil {
		return false
	}
	hosts, ok := header["Host"]
	if len(hosts) > 1 || ok && !httpguts.ValidHostHeader(hosts[0]) || !ok && r.ProtoAtLeast(1, 1) && r.Method != http.MethodConnect {
		return false
	}
	for k, vs := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return true
}

// checkForwarded holds a backend's request got against the rules for the
// header sent from peer.
func checkForwarded(t *testing.T, sent http.Header, host, peer string, trusted bool, got *http.Request) {
	t.Helper()
	// Headers only the proxy or the transport decide about, whatever the
	// client's Connection says.
	own := map[string]bool{"Host": true, "Content-Length": true, "Transfer-Encoding": true,
		"X-Forwarded-For": true, "X-Forwarded-Proto": true, "X-Forwarded-Host": true}
	upgrade := httpguts.HeaderValuesContainsToken(sent["Connection"], "upgrade") && len(sent["Upgrade"]) > 0 &&
		!httpguts.HeaderValuesContainsToken(sent["Upgrade"], "h2c")
	named := map[string]bool{}
	for _, v := range sent["Connection"] {
		for _, tok := range strings.Split(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" {
				named[http.CanonicalHeaderKey(tok)] = true
			}
		}
	}
	for name := range named {
		if _, ok := got.Header[name]; ok && !own[name] && !(name == "Te" || upgrade && (name == "Upgrade" || name == "Connection")) {
			t.Errorf("header %s, named in Connection %q, reached the backend: %q", name, sent["Connection"], got.Header[name])
		}
	}
	for _, name := range []string{"Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Trailer"} {
		if v, ok := got.Header[name]; ok {
			t.Errorf("hop-by-hop header %s reached the backend: %q", name, v)
		}
	}
	if v, ok := got.Header["Te"]; ok && (len(v) != 1 || v[0] != "trailers") {
		t.Errorf("backend got Te %q, want none or trailers", v)
	}
	if v, ok := got.Header["Upgrade"]; ok && (!upgrade || httpguts.HeaderValuesContainsToken(v, "h2c")) {
		t.Errorf("backend got Upgrade %q from a request with Connection %q, Upgrade %q", v, sent["Connection"], sent["Upgrade"])
	}

	// X-Forwarded-*: a trusted peer's are extended or kept, unless it named
	// them in Connection; anyone else's are replaced.
	carried := func(name string) []string {
		if trusted && !named[name] {
			return sent[name]
		}
		return nil
	}
	wantFor := peer
	if prior := carried("X-Forwarded-For"); len(prior) > 0 {
		wantFor = strings.Join(prior, ", ") + ", " + peer
	}
	wantProto, wantHost := carried("X-Forwarded-Proto"), carried("X-Forwarded-Host")
	if wantProto == nil {
		wantProto = []string{"http"}
	}
	if wantHost == nil {
		wantHost = []string{host}
	}
	for name, want := range map[string][]string{
		"X-Forwarded-For": {wantFor}, "X-Forwarded-Proto": wantProto, "X-Forwarded-Host": wantHost, "Forwarded": carried("Forwarded"),
	} {
		if g := got.Header[name]; strings.Join(g, "\n") != strings.Join(want, "\n") {
			t.Errorf("backend got %s %q, want %q (trusted peer: %v, sent %q)", name, g, want, trusted, sent[name])
		}
	}
	if trusted {
		return
	}
	for k, v := range got.Header {
		switch strings.ToLower(strings.ReplaceAll(k, "_", "-")) {
		case "x-real-ip", "forwarded":
			t.Errorf("backend got %s %q from an untrusted peer", k, v)
		case "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host":
			if strings.Contains(k, "_") {
				t.Errorf("backend got lookalike %s %q from an untrusted peer", k, v)
			}
		}
	}
}
