package proxy

import (
	"bufio"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"

	"github.com/portico/portico/reqinfo"
)

// h2cUpgrade serves the HTTP/1.1 "Upgrade: h2c" handshake (RFC 7540 §3.2)
// on the plaintext listener; prior-knowledge h2c is http.Server's own.
// RFC 9113 deprecates the handshake and Go's h2c package is unmaintained,
// but http2.Server still serves an upgraded connection, which is all this
// needs. Only requests without a body are upgraded, as curl sends them; any
// other request is served as HTTP/1.1, as the RFC allows.
type h2cUpgrade struct {
	next        http.Handler
	h2          *http2.Server
	base        *http.Server
	sendTimeout time.Duration
}

func (u *h2cUpgrade) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	settings, ok := h2cSettings(r)
	if !ok {
		u.next.ServeHTTP(w, r)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		u.next.ServeHTTP(w, r)
		return
	}
	defer conn.Close()
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	// The upgraded request is the connection's stream 1; the client's
	// preface may already sit in the hijacked reader's buffer.
	r.Header.Del("Upgrade")
	r.Header.Del("Http2-Settings")
	r.Header.Del("Connection")
	u.h2.ServeConn(newCoalescingConn(&bufferedConn{Conn: conn, r: brw.Reader}, u.sendTimeout), &http2.ServeConnOpts{
		Context:        reqinfo.Detach(r.Context()), // stream 1 keeps r's record; the others get theirs
		BaseConfig:     u.base,
		Handler:        u.next,
		UpgradeRequest: r,
		Settings:       settings,
	})
}

// h2cSettings returns the decoded HTTP2-Settings of a valid upgrade request.
func h2cSettings(r *http.Request) ([]byte, bool) {
	if r.ProtoMajor != 1 || r.ContentLength != 0 ||
		!httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "h2c") ||
		!httpguts.HeaderValuesContainsToken(r.Header["Connection"], "Upgrade") ||
		!httpguts.HeaderValuesContainsToken(r.Header["Connection"], "HTTP2-Settings") ||
		len(r.Header["Http2-Settings"]) != 1 {
		return nil, false
	}
	settings, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(r.Header.Get("Http2-Settings"), "="))
	return settings, err == nil
}

// bufferedConn reads what the HTTP/1 server had buffered before the conn.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// NetConn lets a closing HTTP/2 connection half-close the socket (h1.LingerClose).
func (c *bufferedConn) NetConn() net.Conn { return c.Conn }
