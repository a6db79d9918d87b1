package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestErrorResponses(t *testing.T) {
	cases := []struct {
		name     string
		backend  func(t *testing.T) string // URL of the only backend
		poolOpts string
		prepare  func(*Snapshot)
		want     int
	}{
		{
			name:    "dial failure",
			backend: closedURL,
			want:    http.StatusBadGateway,
		},
		{
			name:    "connection lost before the response",
			backend: func(t *testing.T) string { return startBackend(t, dropConnection).URL },
			want:    http.StatusBadGateway,
		},
		{
			name:     "response header timeout",
			backend:  func(t *testing.T) string { return startBackend(t, stall).URL },
			poolOpts: `response_header_timeout = "200ms"`,
			want:     http.StatusGatewayTimeout,
		},
		{
			name:    "no usable backend",
			backend: func(t *testing.T) string { return startBackend(t, textHandler("ok")).URL },
			prepare: func(s *Snapshot) {
				for _, b := range s.Pools()[0].Backends() {
					b.SetUsable(false)
				}
			},
			want: http.StatusServiceUnavailable,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startPool(t, tc.poolOpts, tc.backend(t))
			if tc.prepare != nil {
				tc.prepare(p.Snap)
			}
			res, body := get(t, newClient(t), p.URL+"/x", "")
			if res.StatusCode != tc.want {
				t.Fatalf("got %d %q, want %d", res.StatusCode, body, tc.want)
			}
			if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q, want text/plain", ct)
			}
			// The cause, with internal addresses, is for the log only.
			if len(body) > 64 {
				t.Errorf("body is %d bytes, want a short status text: %q", len(body), body)
			}
			for _, leak := range []string{"127.0.0.1", "dial", "refused", "tcp", "EOF", "awaiting", "net/http", "backend"} {
				if strings.Contains(body, leak) {
					t.Errorf("body %q reveals the cause (%q)", body, leak)
				}
			}
			waitNoInFlight(t, p.Snap)
		})
	}
}

func TestBackendConnectionsAreReused(t *testing.T) {
	const clients, requests = 64, 20
	b := startBackend(t, textHandler("ok"))
	p := startPool(t, "", b.URL)
	c := newClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range requests {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/", nil)
				if err != nil {
					t.Error(err)
					return
				}
				res, err := c.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				_ = res.Body.Close()
				if res.StatusCode != http.StatusOK {
					t.Errorf("status %d", res.StatusCode)
				}
			}
		})
	}
	wg.Wait()
	if hits := b.hits.Load(); hits != clients*requests {
		t.Fatalf("backend served %d requests, want %d", hits, clients*requests)
	}
	// One connection per concurrent request, plus a few that the transport
	// dials while a finished request's connection is on its way back to the
	// idle pool; without reuse this would be one per request.
	if n := b.conns.Load(); n > clients+clients/4 {
		t.Errorf("%d requests, %d at a time, opened %d backend connections; want about %d", clients*requests, clients, n, clients)
	}
}

func TestRetriesAfterDialFailure(t *testing.T) {
	good := startBackend(t, textHandler("ok"))
	p := startPool(t, "retries = 2", closedURL(t), good.URL)
	c := newClient(t)
	// Round robin sends every other request to the closed port first.
	for i := range 20 {
		if res, body := get(t, c, p.URL+"/", ""); res.StatusCode != http.StatusOK || body != "ok" {
			t.Fatalf("request %d: got %d %q, want 200 from the good backend", i, res.StatusCode, body)
		}
	}
	if n := good.hits.Load(); n != 20 {
		t.Errorf("good backend served %d requests, want 20", n)
	}
}

func TestRetryRules(t *testing.T) {
	// A fresh round-robin pool picks its first backend first, so every case
	// starts on the failing one; the second backend echoes what it gets.
	type failure struct {
		start    func(t *testing.T) (string, *backend) // backend is nil if unreachable
		poolOpts string                                // needed for the failure to happen
	}
	closed := failure{start: func(t *testing.T) (string, *backend) { return closedURL(t), nil }}
	drops := failure{start: func(t *testing.T) (string, *backend) { b := startBackend(t, dropConnection); return b.URL, b }}
	stalls := failure{
		start:    func(t *testing.T) (string, *backend) { b := startBackend(t, stall); return b.URL, b },
		poolOpts: `response_header_timeout = "200ms"`,
	}

	bigBody := make([]byte, 256<<10)
	for i := range bigBody {
		bigBody[i] = byte(i % 251) // a shifted or truncated copy would not match
	}
	cases := []struct {
		name      string
		first     failure
		retries   int
		method    string
		body      []byte
		want      int
		firstHits int64 // checked when the first backend is reachable
		nextHits  int64
	}{
		{"dial failure, GET", closed, 2, http.MethodGet, nil, http.StatusOK, 0, 1},
		{"dial failure, POST with body", closed, 2, http.MethodPost, bigBody, http.StatusOK, 0, 1},
		{"dial failure, retries = 0", closed, 0, http.MethodGet, nil, http.StatusBadGateway, 0, 0},
		{"connection lost, GET", drops, 2, http.MethodGet, nil, http.StatusOK, 1, 1},
		{"connection lost, DELETE", drops, 1, http.MethodDelete, nil, http.StatusOK, 1, 1},
		{"connection lost, POST with body", drops, 2, http.MethodPost, []byte("order=1"), http.StatusBadGateway, 1, 0},
		{"connection lost, POST without body", drops, 2, http.MethodPost, nil, http.StatusBadGateway, 1, 0},
		{"connection lost, PUT with body", drops, 2, http.MethodPut, []byte("v=1"), http.StatusBadGateway, 1, 0},
		{"connection lost, GET, retries = 0", drops, 0, http.MethodGet, nil, http.StatusBadGateway, 1, 0},
		{"response header timeout, GET", stalls, 2, http.MethodGet, nil, http.StatusGatewayTimeout, 1, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			firstURL, first := tc.first.start(t)
			next := startBackend(t, echoHandler)
			p := startPool(t, fmt.Sprintf("retries = %d\n%s", tc.retries, tc.first.poolOpts), firstURL, next.URL)

			var body io.Reader
			if tc.body != nil {
				body = bytes.NewReader(tc.body)
			}
			res, got := do(t, newClient(t), newRequest(t, tc.method, p.URL+"/r", body))
			if res.StatusCode != tc.want {
				t.Fatalf("got %d %.40q, want %d", res.StatusCode, got, tc.want)
			}
			if tc.want == http.StatusOK && got != tc.method+"\n"+string(tc.body) {
				t.Errorf("second backend received a different body (%d bytes echoed, %d sent)", len(got)-len(tc.method)-1, len(tc.body))
			}
			if first != nil && first.hits.Load() != tc.firstHits {
				t.Errorf("first backend saw the request %d times, want %d", first.hits.Load(), tc.firstHits)
			}
			if n := next.hits.Load(); n != tc.nextHits {
				t.Errorf("second backend saw the request %d times, want %d", n, tc.nextHits)
			}
			waitNoInFlight(t, p.Snap)
		})
	}
}
