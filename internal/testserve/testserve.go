// Package testserve has pieces of test backends that tests of several
// packages share: a count of a server's connections, an event stream, a
// response reader that allocates nothing.
package testserve

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Conns counts an http.Server's connections as they open and end (closed,
// or hijacked for an upgrade).
type Conns struct{ Opened, Ended atomic.Int64 }

// Track counts srv's connections; call it before srv serves.
func (c *Conns) Track(srv *http.Server) {
	prev := srv.ConnState
	srv.ConnState = func(conn net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			c.Opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			c.Ended.Add(1)
		}
		if prev != nil {
			prev(conn, s)
		}
	}
}

// Open is the number of connections open now.
func (c *Conns) Open() int64 { return c.Opened.Load() - c.Ended.Load() }

// Events streams a server-sent event, "data: tick", every 20 ms until the
// client leaves.
func Events(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	rc := http.NewResponseController(w)
	for {
		if _, err := io.WriteString(w, "data: tick\n\n"); err != nil || rc.Flush() != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ReadResponse reads one response whose body is n bytes long from c into
// buf, allocating nothing, for benchmarks and allocation counts; more than
// one response is an error.
func ReadResponse(c net.Conn, buf []byte, n int) error {
	got := 0
	for {
		m, err := c.Read(buf[got:])
		if err != nil {
			return err
		}
		got += m
		if end := bytes.Index(buf[:got], []byte("\r\n\r\n")); end >= 0 && got >= end+4+n {
			if got > end+4+n {
				return io.ErrUnexpectedEOF
			}
			return nil
		}
	}
}
