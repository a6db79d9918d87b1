package middleware_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// "secret", bcrypt cost 4 (the test need not be slow).
const aliceHash = "$2a$04$Ls1ZsgTInmKe3Y/s6nh27.wNbxfHzUEeKLIaAUe3CyQIeoM7LVMta"

func TestBasicAuth(t *testing.T) {
	s := start(t, `
[middlewares.auth]
type = "basic_auth"
realm = "ops"
users = { alice = "`+aliceHash+`" }
[[routes]]
pool = "p"
middlewares = ["auth"]
`)
	res, body := get(t, s.URL+"/")
	s.expect(t, res, body, http.StatusUnauthorized, false)
	if got := res.Header.Get("Www-Authenticate"); got != `Basic realm="ops", charset="UTF-8"` {
		t.Errorf("WWW-Authenticate = %q", got)
	}
	// Y:Y is alice:wrong, then alice:secret; X-User from the client is replaced.
	res, body = get(t, s.URL+"/", "Authorization: Basic YWxpY2U6d3Jvbmc=")
	s.expect(t, res, body, http.StatusUnauthorized, false)
	res, body = get(t, s.URL+"/", "Authorization: Basic YWxpY2U6c2VjcmV0", "X-User: root")
	s.expect(t, res, body, 200, true)
	be := s.be.lastRequest().Header
	if be.Get("X-User") != "alice" || be.Get("Authorization") != "" {
		t.Errorf("backend got X-User %q and Authorization %q; want alice and none", be.Get("X-User"), be.Get("Authorization"))
	}
}

// authService answers as a forward_auth service would: 200 with X-Auth-User
// for the cookie "ok", 302 with a body otherwise. It records what it was
// asked.
func authService(t *testing.T) (*httptest.Server, chan http.Header) {
	t.Helper()
	asked := make(chan http.Header, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked <- r.Header.Clone()
		if r.Header.Get("Cookie") == "session=ok" {
			w.Header().Set("X-Auth-User", "carol")
			return
		}
		w.Header().Set("Location", "https://login.example/")
		w.Header().Set("X-Reason", "no session")
		w.WriteHeader(http.StatusFound)
		_, _ = io.WriteString(w, "please log in")
	}))
	t.Cleanup(srv.Close)
	return srv, asked
}

func TestForwardAuth(t *testing.T) {
	auth, asked := authService(t)
	s := start(t, `
[middlewares.sso]
type = "forward_auth"
url = "`+auth.URL+`/verify"
request_headers = ["Cookie"]
response_headers = ["X-Auth-User"]
[[routes]]
pool = "p"
middlewares = ["sso"]
`)
	// Allowed: the auth service's header reaches the backend, the client's
	// forged one does not.
	res, body := do(t, "POST", s.URL+"/app/x?y=1", strings.NewReader("data"), "Cookie: session=ok", "X-Auth-User: mallory")
	s.expect(t, res, body, 200, true)
	if got := s.be.lastRequest().Header.Values("X-Auth-User"); len(got) != 1 || got[0] != "carol" {
		t.Errorf("backend got X-Auth-User %q, want carol", got)
	}
	h := <-asked
	for k, want := range map[string]string{
		"X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/app/x?y=1", "X-Forwarded-Proto": "http",
		"X-Forwarded-Host": strings.TrimPrefix(s.URL, "http://"), "X-Forwarded-For": "127.0.0.1", "Cookie": "session=ok",
	} {
		if h.Get(k) != want {
			t.Errorf("auth service got %s %q, want %q", k, h.Get(k), want)
		}
	}

	// Denied: the client gets the auth service's answer as it came.
	res, body = get(t, s.URL+"/app", "Cookie: session=bad", "X-Auth-User: mallory")
	s.expect(t, res, body, http.StatusFound, false)
	if body != "please log in" || res.Header.Get("Location") != "https://login.example/" || res.Header.Get("X-Reason") != "no session" {
		t.Errorf("denial relayed as %d %q %v", res.StatusCode, body, res.Header)
	}
	<-asked
}

func TestForwardAuthDownIs503(t *testing.T) {
	stuck := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(ioTimeout):
		}
	}))
	defer stuck.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	s := start(t, `
[middlewares.down]
type = "forward_auth"
url = "`+down.URL+`"
[middlewares.slow]
type = "forward_auth"
url = "`+stuck.URL+`"
timeout = "100ms"
[[routes]]
pool = "p"
path_prefix = "/down"
middlewares = ["down"]
[[routes]]
pool = "p"
path_prefix = "/slow"
middlewares = ["slow"]
`)
	for _, p := range []string{"/down", "/slow"} {
		start := time.Now()
		res, body := get(t, s.URL+p)
		s.expect(t, res, body, http.StatusServiceUnavailable, false)
		if time.Since(start) > 2*time.Second {
			t.Errorf("%s took %v", p, time.Since(start))
		}
	}
}

// The header that tells the backend who called may be configured in any
// case: the client's own copies, in whatever case it sent them, never
// reach the backend beside the one the middleware sets. (A lower-case
// user_header used to be set beside the client's canonical X-User, and the
// backend read both, the forged one first.)
func TestUserHeaderInAnyCaseReplacesTheClients(t *testing.T) {
	s := start(t, `
[middlewares.login]
type = "basic_auth"
users = { alice = "`+aliceHash+`" }
user_header = "x-user"
[middlewares.key]
type = "api_key"
keys = { ci = "`+sha("ci-secret")+`" }
user_header = "x-CALLER"
[[routes]]
pool = "p"
path_prefix = "/login"
middlewares = ["login"]
[[routes]]
pool = "p"
path_prefix = "/key"
middlewares = ["key"]
`)
	for _, tc := range []struct{ path, cred, header, want string }{
		{"/login", "Authorization: Basic YWxpY2U6c2VjcmV0", "X-User", "alice"},
		{"/key", "X-API-Key: ci-secret", "X-Caller", "ci"},
	} {
		res, body := get(t, s.URL+tc.path, tc.cred, tc.header+": root", strings.ToLower(tc.header)+": root")
		s.expect(t, res, body, 200, true)
		if got := s.be.lastRequest().Header.Values(tc.header); len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s: backend got %s %q, want only %q", tc.path, tc.header, got, tc.want)
		}
	}
}
