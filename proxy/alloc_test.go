package proxy

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"testing"

	"github.com/portico/portico/internal/testserve"
)

// A small proxied GET through Portico's HTTP/1 server, to a backend that
// allocates nothing, leaves two objects for the collector: the request's
// head and the response's, whose strings the fields' names and values
// are. The connection reuses the rest (request, context, record, header
// maps, value slices, wrappers). Each allocation is garbage at some 60,000
// requests a second, and collections are what lengthen the slowest
// responses.
func TestProxiedRequestAllocations(t *testing.T) {
	h := benchProxyTo(t, []string{cannedBackend(t)})
	addr := serveFront(t, &http.Server{Handler: h}, listenLoopback(t))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET /index.html HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: test\r\n\r\n")
	buf := make([]byte, 4096)
	var failed error
	roundTrip := func() {
		if _, err := c.Write(req); err != nil {
			failed = err
			return
		}
		if err := testserve.ReadResponse(c, buf, 100); err != nil {
			failed = err
		} else if !bytes.HasPrefix(buf, []byte("HTTP/1.1 200 ")) {
			failed = errNot200
		}
	}
	for range 50 {
		roundTrip() // warm: the backend connection, the pools
	}
	n := testing.AllocsPerRun(500, roundTrip)
	if failed != nil {
		t.Fatal(failed)
	}
	if n > 2 {
		t.Errorf("%.2f allocations per proxied request, want at most 2", n)
	}
}

var errNot200 = errors.New("the proxied response is not a 200")
