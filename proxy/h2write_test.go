package proxy

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico/portico/internal/testcert"
)

// countingListener counts the writes to the sockets it accepts.
type countingListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, writes: l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// tlsPair returns a coalescingConn (with closeTimeout) on the server side
// of a TLS connection over a and b, and the client side, both past the
// handshake.
func tlsPair(t *testing.T, a, b net.Conn, closeTimeout time.Duration) (net.Conn, *tls.Conn) {
	t.Helper()
	ca := testcert.NewCA(t)
	srv := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{ca.Valid(t, "front.test").TLS}})
	cl := tls.Client(b, &tls.Config{RootCAs: ca.Pool(), ServerName: "front.test"})
	done := make(chan error, 1)
	go func() { done <- srv.Handshake() }()
	if err := cl.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Closing the sockets, not the TLS connections: a TLS close waits to
	// send its alert to a peer that may not read.
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return newCoalescingConn(srv, closeTimeout), cl
}

func loopbackPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln := listenLoopback(t)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	b, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-accepted
	if a == nil {
		t.Fatal("accept failed")
	}
	return a, b
}

func TestCoalescingConnKeepsEachWriteWholeAndInOrder(t *testing.T) {
	a, b := loopbackPair(t)
	srv, cl := tlsPair(t, a, b, time.Minute)
	const writers, lines = 8, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				// Some writes are larger than the buffer, so that they
				// must wait for it to drain, half written.
				pad := strings.Repeat("x", (i%50)*1000)
				if _, err := fmt.Fprintf(srv, "%d %d %s\n", g, i, pad); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	got := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(cl)
		_ = cl.Close() // as an HTTP/2 client does at the end: Close lingers until then
		got <- all
	}()
	wg.Wait()
	// Close writes what is still pending before closing.
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	next := make([]int, writers)
	for line := range bytes.Lines(<-got) {
		var g, i int
		var pad string
		if _, err := fmt.Sscanf(string(line), "%d %d %s\n", &g, &i, &pad); err != nil && !(err == io.ErrUnexpectedEOF || len(pad) == 0) {
			t.Fatalf("line %.40q: %v", line, err)
		}
		if g < 0 || g >= writers || i != next[g] || len(pad) != (i%50)*1000 {
			t.Fatalf("line %.40q (%d bytes of padding) after %d lines of writer %d: writes were split or reordered", line, len(pad), next[g], g)
		}
		next[g]++
	}
	for g, n := range next {
		if n != lines {
			t.Errorf("writer %d: %d lines arrived, want %d", g, n, lines)
		}
	}
}

func TestCoalescingConnBoundsWhatWaitsForASlowReader(t *testing.T) {
	// net.Pipe has no kernel buffer: what the reader has not taken is held
	// by the writer.
	a, b := net.Pipe()
	srv, cl := tlsPair(t, a, b, time.Minute)
	const total = 1 << 20
	var accepted atomic.Int64
	wrote := make(chan error, 1)
	go func() {
		p := bytes.Repeat([]byte("y"), 1000)
		for accepted.Load() < total {
			n, err := srv.Write(p[:min(len(p), int(total-accepted.Load()))])
			accepted.Add(int64(n))
			if err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	time.Sleep(200 * time.Millisecond)
	// One buffer being written and one filling.
	if n := accepted.Load(); n > 2*32<<10 {
		t.Errorf("%d bytes accepted while the client read nothing, want at most %d", n, 2*32<<10)
	}
	n, err := io.CopyN(io.Discard, cl, total)
	if err != nil || n != total {
		t.Fatalf("read %d of %d bytes: %v", n, total, err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

func TestCoalescingConnReportsAFailedWrite(t *testing.T) {
	a, b := loopbackPair(t)
	srv, cl := tlsPair(t, a, b, time.Minute)
	_ = cl.Close()
	_ = b.Close()
	deadline := time.Now().Add(ioTimeout)
	p := make([]byte, 4096)
	for {
		if _, err := srv.Write(p); err != nil {
			break // a later write returns the error of an earlier one
		}
		if time.Now().After(deadline) {
			t.Fatal("writes to a closed peer kept succeeding")
		}
		time.Sleep(time.Millisecond)
	}
}

// A write deadline set on the connection does not cut the writer short:
// the bytes a Write took still arrive.
func TestCoalescingConnIgnoresWriteDeadlines(t *testing.T) {
	a, b := loopbackPair(t)
	defer b.Close()
	w := newCoalescingConn(a, time.Minute)
	_ = w.SetWriteDeadline(time.Now().Add(-time.Second))
	_ = w.SetDeadline(time.Now().Add(-time.Second))
	if _, err := w.Write([]byte("still delivered")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the writer has written, before Close sets its own deadline
	got := make(chan string, 1)
	go func() {
		all, _ := io.ReadAll(b)
		_ = b.Close()
		got <- string(all)
	}()
	_ = w.Close()
	if s := <-got; s != "still delivered" {
		t.Errorf("peer got %q", s)
	}
}

func TestCoalescingConnCloseGivesUpOnAStuckReader(t *testing.T) {
	const closeTimeout = 300 * time.Millisecond
	a, b := net.Pipe()
	srv, _ := tlsPair(t, a, b, closeTimeout)
	if _, err := srv.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = srv.Close()
	if d := time.Since(start); d > closeTimeout+time.Second {
		t.Errorf("Close took %v with a peer that reads nothing, want about %v", d, closeTimeout)
	}
	if _, err := srv.Write([]byte("x")); err == nil {
		t.Error("Write after Close succeeded")
	}
}

// What Write took reaches a peer that pauses longer than a second before
// reading, as a socket's close leaves it to the kernel to deliver.
func TestCoalescingConnCloseWaitsForAPausedPeer(t *testing.T) {
	a, b := loopbackPair(t)
	defer a.Close()
	defer b.Close()
	_ = a.(*net.TCPConn).SetWriteBuffer(4096)
	_ = b.(*net.TCPConn).SetReadBuffer(4096)
	w := newCoalescingConn(a, time.Minute)
	// About 64 KiB fit in the kernel's buffers here; the rest waits in
	// coalescingConn's.
	const size = 120 << 10
	got := make(chan int, 1)
	go func() {
		time.Sleep(2500 * time.Millisecond)
		n, _ := io.Copy(io.Discard, b)
		_ = b.Close()
		got <- int(n)
	}()
	if _, err := w.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	if n := <-got; n != size {
		t.Errorf("peer got %d of the %d bytes Write accepted before Close", n, size)
	}
}

// HTTP/2 responses that are ready together leave in a few writes, where
// x/net's server alone flushes at least once per response: over TLS, and
// over cleartext with prior knowledge.
func TestHTTP2ResponsesReadyTogetherShareWrites(t *testing.T) {
	for _, tlsOn := range []bool{true, false} {
		t.Run(map[bool]string{true: "tls", false: "h2c"}[tlsOn], func(t *testing.T) {
			const n = 64
			beURL := startBarrierBackend(t, n)
			server := ""
			if !tlsOn {
				server = "h2c = true"
			}
			f := startFront(t, server, poolDoc(beURL)+"max_idle_conns_per_backend = 128\n"+anyRoute, tlsOn)
			client := f.h2Client()
			scheme := map[bool]string{true: "https", false: "http"}[tlsOn]
			if res, err := client.Get(scheme + "://front.test/warm"); err != nil {
				t.Fatal(err)
			} else {
				res.Body.Close()
			}
			before := f.writes.Load()
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					res, err := client.Get(fmt.Sprintf("%s://front.test/s%d", scheme, i))
					if err != nil {
						t.Error(err)
						return
					}
					defer res.Body.Close()
					if body, _ := io.ReadAll(res.Body); res.ProtoMajor != 2 || string(body) != fmt.Sprintf("/s%d", i) {
						t.Errorf("stream %d: %s %q", i, res.Proto, body)
					}
				})
			}
			wg.Wait()
			writes := f.writes.Load() - before
			t.Logf("%d responses in %d writes", n, writes)
			if writes >= n {
				t.Errorf("%d responses ready together took %d writes to the client, want fewer than %d", n, writes, n)
			}
		})
	}
}

// Coalescing holds nothing back: what a streamed response flushes reaches
// an HTTP/2 client while the stream stays open.
func TestHTTP2StreamedResponseIsNotHeldBack(t *testing.T) {
	for _, tlsOn := range []bool{true, false} {
		t.Run(map[bool]string{true: "tls", false: "h2c"}[tlsOn], func(t *testing.T) {
			release := make(chan struct{})
			be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = io.WriteString(w, "data: first\n\n")
				w.(http.Flusher).Flush()
				select {
				case <-release:
				case <-time.After(ioTimeout):
				}
				_, _ = io.WriteString(w, "data: last\n\n")
			}))
			defer be.Close()
			defer close(release)
			server := ""
			if !tlsOn {
				server = "h2c = true"
			}
			f := startFront(t, server, poolDoc(be.URL)+anyRoute, tlsOn)
			scheme := map[bool]string{true: "https", false: "http"}[tlsOn]
			res, err := f.h2Client().Get(scheme + "://front.test/events")
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			start := time.Now()
			buf := make([]byte, len("data: first\n\n"))
			if _, err := io.ReadFull(res.Body, buf); err != nil || string(buf) != "data: first\n\n" {
				t.Fatalf("first event: %q, %v", buf, err)
			}
			if d := time.Since(start); d > ioTimeout/2 {
				t.Errorf("the first event took %v, held until the stream's end", d)
			}
		})
	}
}
