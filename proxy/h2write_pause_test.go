package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/portico/portico/internal/testcert"
)

// pausingConn is a client socket whose reader stops for a while once told
// to: a phone that goes to the background, a radio hand-over. Reads are
// small, so that little gets through once the pause is asked for.
type pausingConn struct {
	net.Conn
	until atomic.Int64 // unix ns; reads wait until then
}

func (c *pausingConn) Read(p []byte) (int, error) {
	if d := time.Until(time.Unix(0, c.until.Load())); d > 0 {
		time.Sleep(d)
	}
	return c.Conn.Read(p[:min(len(p), 1024)])
}

// smallBufListener gives accepted sockets a small kernel send buffer, so
// that what the server has written is mostly held by the server.
type smallBufListener struct{ net.Listener }

func (l smallBufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

// A reload retires the old Generation, which then answers with
// "Connection: close": x/net sends GOAWAY and closes the connection a
// second after its last stream ends, and a stream ends once its last bytes
// are written, here into coalescingConn's buffers. A client that stops
// reading for a few seconds at the end of a response still gets all of it,
// as it did when those bytes went to the kernel.
func TestHTTP2ResponseOfARetiredGenerationSurvivesAClientPause(t *testing.T) {
	for _, tlsOn := range []bool{true, false} {
		t.Run(map[bool]string{true: "tls", false: "h2c"}[tlsOn], func(t *testing.T) {
			t.Parallel()
			const size = 60 << 10
			body := bytes.Repeat([]byte("0123456789abcdef"), size/16)
			paused := make(chan struct{})
			handlerDone := make(chan error, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusOK)
				w.(http.Flusher).Flush()
				select {
				case <-paused:
				case <-time.After(ioTimeout):
				}
				_, err := w.Write(body)
				handlerDone <- err
			})
			server := ""
			if !tlsOn {
				server = "h2c = true\n"
			}
			cfg := parseConfig(t, "[server]\n"+server+poolConfig("", "http://127.0.0.1:1"), nil)
			var srv *http.Server
			var err error
			var ca *testcert.CA
			if tlsOn {
				ca = testcert.NewCA(t)
				tc := &tls.Config{Certificates: []tls.Certificate{ca.Valid(t, "front.test").TLS}}
				srv, err = NewTLSServer(&cfg.Server, h, tc, discardLog)
			} else {
				srv, err = NewServer(&cfg.Server, h, discardLog)
			}
			if err != nil {
				t.Fatal(err)
			}
			l := listen(t)
			g, _ := l.Serve(srv, func(ln net.Listener) net.Listener { return smallBufListener{ln} })
			t.Cleanup(func() { _ = g.Close() })
			g.Retire() // as a reload does

			var pc *pausingConn
			tr := &http2.Transport{
				AllowHTTP: !tlsOn,
				DialTLSContext: func(_ context.Context, network, _ string, _ *tls.Config) (net.Conn, error) {
					raw, err := net.Dial(network, l.Addr().String())
					if err != nil {
						return nil, err
					}
					_ = raw.(*net.TCPConn).SetReadBuffer(4096)
					pc = &pausingConn{Conn: raw}
					if !tlsOn {
						return pc, nil
					}
					c := tls.Client(pc, &tls.Config{RootCAs: ca.Pool(), ServerName: "front.test", NextProtos: []string{"h2"}})
					return c, c.Handshake()
				},
			}
			defer tr.CloseIdleConnections()
			scheme := map[bool]string{true: "https", false: "http"}[tlsOn]
			req, _ := http.NewRequest("GET", scheme+"://front.test/big", nil)
			res, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			// The client stops reading for 3s, then reads on.
			pc.until.Store(time.Now().Add(3 * time.Second).UnixNano())
			close(paused)
			select {
			case err := <-handlerDone:
				if err != nil {
					t.Logf("handler's write failed: %v", err)
				}
			case <-time.After(ioTimeout):
			}
			got, err := io.ReadAll(res.Body)
			if err != nil || !bytes.Equal(got, body) {
				t.Errorf("client read %d of %d bytes, err %v", len(got), len(body), err)
			}
		})
	}
}
