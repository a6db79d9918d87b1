package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// slowClientProxy serves a proxy with the given [server] settings in front
// of backend and returns its address.
func slowClientProxy(t *testing.T, backend http.HandlerFunc, serverTOML string) string {
	t.Helper()
	b := startBackend(t, backend)
	return startProxy(t, "[server]\n"+serverTOML+"\n"+poolConfig("retries = 0", b.URL), nil).Addr
}

// A client that sends part of its body and stalls is cut off after
// client_body_timeout. A large body streams to the backend, which sees it
// end in an error instead of waiting for it forever; a small one is read
// whole before a backend is chosen, so the backend never sees the request.
func TestSlowRequestBodyIsCutOff(t *testing.T) {
	for _, tc := range []struct {
		name   string
		length int
	}{
		{"streamed body", 4 * smallBody},
		{"small body", 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backendErr := make(chan error, 1)
			b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
				_, err := io.ReadAll(r.Body)
				backendErr <- err
			})
			addr := startProxy(t, "[server]\nclient_body_timeout = \"300ms\"\n"+poolConfig("retries = 0", b.URL), nil).Addr

			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n0123456789", tc.length)

			if tc.length > smallBody {
				select {
				case err := <-backendErr:
					if err == nil {
						t.Fatal("backend read a whole body the client never sent")
					}
				case <-time.After(5 * time.Second):
					t.Fatal("the stalled upload is still open after 5s with client_body_timeout 300ms")
				}
			}
			// The proxy gives up on the client connection too.
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.Copy(io.Discard, c)
			if d := time.Since(start); d < 300*time.Millisecond || d > 4*time.Second {
				t.Errorf("stalled upload ended after %v, want about 300ms", d)
			}
			if tc.length <= smallBody && b.hits.Load() != 0 {
				t.Errorf("backend saw a request whose small body never arrived")
			}
		})
	}
}

// An upload that keeps moving is not cut off, however long it takes in all.
func TestSlowButSteadyUploadPasses(t *testing.T) {
	addr := slowClientProxy(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "got %d bytes", len(b))
	}, `client_body_timeout = "300ms"`)

	pr, pw := io.Pipe()
	go func() {
		for range 8 { // 8 × 100ms = longer than the timeout, never idle that long
			time.Sleep(100 * time.Millisecond)
			_, _ = pw.Write([]byte("0123456789"))
		}
		pw.Close()
	}()
	res, err := http.Post("http://"+addr+"/upload", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || string(body) != "got 80 bytes" {
		t.Errorf("got %d %q, want 200 \"got 80 bytes\"", res.StatusCode, body)
	}
}

// A backend that takes longer than client_body_timeout to answer, after the
// body has arrived, is not cut off: the guard only covers stalled reads.
func TestSlowBackendAfterBodyIsNotCutOff(t *testing.T) {
	addr := slowClientProxy(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		time.Sleep(600 * time.Millisecond)
		_, _ = io.WriteString(w, "done")
	}, `client_body_timeout = "200ms"`)

	res, err := http.Post("http://"+addr+"/", "text/plain", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || string(body) != "done" {
		t.Errorf("got %d %q, want 200 \"done\"", res.StatusCode, body)
	}
}

// A client that stops reading a large response is dropped after
// send_timeout, which closes the backend connection too, so the backend's
// writes fail instead of blocking forever. The same holds for a later
// request on a keep-alive connection, just after a small response (net/http
// clears the connection's write deadline after each response).
func TestClientNotReadingIsCutOff(t *testing.T) {
	for _, tc := range []struct {
		name, requests string
	}{
		{"first request", "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"after a small one", "GET /small HTTP/1.1\r\nHost: x\r\n\r\nGET /big HTTP/1.1\r\nHost: x\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backendErr := make(chan error, 1)
			addr := slowClientProxy(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/small" {
					_, _ = io.WriteString(w, "small")
					return
				}
				chunk := make([]byte, 64<<10)
				for range 4096 { // 256 MiB: far more than socket buffers hold
					if _, err := w.Write(chunk); err != nil {
						backendErr <- err
						return
					}
				}
				backendErr <- nil
			}, `send_timeout = "300ms"`)

			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprint(c, tc.requests)
			// Read the first status line, then stop reading.
			if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
				t.Fatalf("status line %q, %v", line, err)
			}

			select {
			case err := <-backendErr:
				if err == nil {
					t.Fatal("backend wrote 256 MiB to a client that reads nothing")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("backend still blocked writing after 10s with send_timeout 300ms")
			}
		})
	}
}

// "0s" turns the guards off: a body that pauses longer than any default
// would allow still arrives.
func TestSlowClientGuardsCanBeDisabled(t *testing.T) {
	addr := slowClientProxy(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = w.Write(b)
	}, "client_body_timeout = \"0s\"\nsend_timeout = \"0s\"")

	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte("a"))
		time.Sleep(300 * time.Millisecond)
		_, _ = pw.Write([]byte("b"))
		pw.Close()
	}()
	res, err := http.Post("http://"+addr+"/", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if string(body) != "ab" {
		t.Errorf("got %q, want \"ab\"", body)
	}
}

// Slowloris: many connections trickling their headers, reconnecting as soon
// as they are cut off, do not keep normal traffic from being served.
func TestSlowlorisDoesNotStarveNormalTraffic(t *testing.T) {
	const slowConns, duration = 300, 2500 * time.Millisecond
	b := startBackend(t, textHandler("ok"))
	p := startProxy(t, "[server]\nread_header_timeout = \"1s\"\n"+poolConfig("", b.URL), nil)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var cut atomic.Int64 // slow connections the proxy closed
	for range slowConns {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				conn, err := net.DialTimeout("tcp", p.Addr, time.Second)
				if err != nil {
					continue
				}
				_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x.test\r\nX-Slow: ")
				for closed := false; !closed; {
					select {
					case <-stop:
						_ = conn.Close()
						return
					case <-time.After(100 * time.Millisecond):
						if _, err := conn.Write([]byte("a")); err != nil {
							closed = true
							cut.Add(1)
						}
					}
				}
				_ = conn.Close()
			}
		})
	}

	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 8}}
	var ok, failed atomic.Int64
	deadline := time.Now().Add(duration)
	var normal sync.WaitGroup
	for range 4 {
		normal.Go(func() {
			for time.Now().Before(deadline) {
				res, err := c.Get(p.URL + "/")
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	normal.Wait()
	close(stop)
	wg.Wait()

	total := ok.Load() + failed.Load()
	t.Logf("%d slow connections, %d of them cut off; normal traffic: %d of %d requests served", slowConns, cut.Load(), ok.Load(), total)
	if total < 100 || float64(ok.Load()) < 0.99*float64(total) {
		t.Errorf("normal traffic: %d of %d requests served, want at least 100 and 99%%", ok.Load(), total)
	}
	if cut.Load() == 0 {
		t.Error("no slow connection was cut off by read_header_timeout")
	}
	if n := b.hits.Load(); n != ok.Load() {
		t.Errorf("backend served %d requests, want only the %d normal ones", n, ok.Load())
	}
}
