// Package testserve has pieces of test backends that tests of several
// packages share: a count of a server's connections, an event stream.
package testserve

import (
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
