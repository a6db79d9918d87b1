package h1

import (
	"bytes"
	"net"
	"net/http"
	"testing"

	"github.com/portico/portico/internal/testserve"
)

// BenchmarkServer measures one keep-alive GET through the server to a
// handler that answers 100 bytes, over loopback TCP; the client allocates
// nothing, so allocs/op are the server's. "net/http" is the same handler
// on net/http's server, for comparison.
func BenchmarkServer(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 100)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = textPlain
		_, _ = w.Write(body)
	})
	for _, impl := range []string{"h1", "net/http"} {
		b.Run(impl, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			cfg := &http.Server{Handler: h}
			if impl == "h1" {
				s := NewServer(cfg)
				go func() { _ = s.Serve(ln) }()
				defer s.Close()
			} else {
				go func() { _ = cfg.Serve(ln) }()
				defer cfg.Close()
			}
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := []byte("GET /bench HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
			buf := make([]byte, 4096)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				if err := testserve.ReadResponse(c, buf, len(body)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

var textPlain = []string{"text/plain"}
