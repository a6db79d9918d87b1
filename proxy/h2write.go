package proxy

import (
	"crypto/tls"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/portico/portico/config"
	"github.com/portico/portico/proxy/h1"
)

// x/net's HTTP/2 server flushes its write buffer whenever it has no frame
// queued, and every flush is a write system call (and over TLS a record). A proxied
// response is two frames (HEADERS, then DATA), queued one after the other by
// the stream's goroutine, so each response costs two flushes, and streams of
// one connection that finish together are not sent together. Profiling
// h2-tls put a third of the proxy's CPU in these writes.
//
// coalescingConn takes the server's writes into a buffer and lets one
// goroutine write what has gathered once the goroutines that are ready to run
// have had their turn: the responses of all streams that finished in one
// round of the scheduler go out in one write. It adds no timer and no
// wait when nothing else is runnable. Backpressure stays: a Write blocks
// while a buffer of 32 KiB waits, so a client that stops reading stops the
// server as before (and HTTP/2 flow control bounds what any stream sends).
// A write error is returned by the next Write, which ends the connection as
// it would have, but no longer to the stream whose frames were lost: as
// with a socket, whose writes end in the kernel's buffer. A stalled client
// holds up to 64 KiB here (x/net's own buffer is 4 KiB).
type coalescingConn struct {
	net.Conn // reads, addresses and deadlines pass through

	writeMu sync.Mutex // a Write goes in whole, even when it must wait
	mu      sync.Mutex
	drained sync.Cond // signalled when the writer takes or writes a buffer
	// pend holds n bytes accepted but not yet written; spare is the
	// writer's other buffer. Both are pooled copy buffers, returned once
	// all is written, so an idle connection holds none.
	pend, spare *[32 << 10]byte
	n           int
	writing     bool  // a writer goroutine is running
	closing     bool  // Close waits for the writer
	err         error // the first write error, or net.ErrClosed
	// closeTimeout bounds each write once Close waits: what the server
	// took as written gets as long to reach a client that pauses as a
	// socket's close gives the kernel, but not forever.
	closeTimeout time.Duration
}

// SetWriteDeadline is ignored: a Write returns once its bytes are
// buffered, so a deadline would time nothing, and it could undo the one
// Close sets for the writer. (x/net sets one only with WriteByteTimeout or
// http.Server's WriteTimeout, which Portico leaves unset.)
func (c *coalescingConn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets the read deadline only, as SetWriteDeadline is ignored.
func (c *coalescingConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

// NetConn is the connection underneath, for hooks that look for it.
func (c *coalescingConn) NetConn() net.Conn { return c.Conn }

// newCoalescingConn wraps a connection the HTTP/2 server is to serve: TLS,
// or cleartext (h2c). sendTimeout is the server's send_timeout.
func newCoalescingConn(c net.Conn, sendTimeout time.Duration) net.Conn {
	if sendTimeout <= 0 {
		sendTimeout = config.DefaultSendTimeout // send_timeout is off: its default still bounds a close
	}
	cc := &coalescingConn{Conn: c, closeTimeout: sendTimeout}
	cc.drained.L = &cc.mu
	if tc, ok := c.(*tls.Conn); ok {
		return coalescingTLSConn{cc, tc}
	}
	return cc
}

// coalescingTLSConn shows the server the TLS state, which it checks and
// gives requests.
type coalescingTLSConn struct {
	*coalescingConn
	tls *tls.Conn
}

func (c coalescingTLSConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	written := 0
	for len(p) > 0 {
		for c.err == nil && c.pend != nil && c.n == len(c.pend) {
			c.drained.Wait()
		}
		if c.err != nil {
			return written, c.err
		}
		if c.pend == nil {
			c.pend = copyBuffers.get()
		}
		k := copy(c.pend[c.n:], p)
		c.n += k
		written += k
		p = p[k:]
		if !c.writing {
			c.writing = true
			go c.writeOut()
		}
	}
	return written, nil
}

// writeOut writes what is pending until nothing is.
func (c *coalescingConn) writeOut() {
	// A new goroutine runs next; yielding first lets the streams that are
	// ready add their frames before the write.
	runtime.Gosched()
	c.mu.Lock()
	for c.err == nil && c.n > 0 {
		buf, n := c.pend, c.n
		c.pend, c.spare, c.n = c.spare, nil, 0
		c.drained.Broadcast()
		if c.closing {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(c.closeTimeout))
		}
		c.mu.Unlock()
		_, err := c.Conn.Write(buf[:n])
		c.mu.Lock()
		c.spare = buf
		if err != nil && c.err == nil {
			c.err = err
		}
	}
	if c.pend != nil {
		copyBuffers.put(c.pend)
	}
	if c.spare != nil {
		copyBuffers.put(c.spare)
	}
	c.pend, c.spare, c.n = nil, nil, 0
	c.writing = false
	c.drained.Broadcast()
	c.mu.Unlock()
}

// Close writes what is pending first, as the server expects of a write that
// returned: it is often a GOAWAY or a response's last frame. A client that
// takes nothing for closeTimeout loses it.
func (c *coalescingConn) Close() error {
	c.mu.Lock()
	if c.writing && c.err == nil {
		c.closing = true
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.closeTimeout)) // for the write under way
		for c.writing {
			c.drained.Wait()
		}
	}
	failed := c.err != nil
	if !failed {
		c.err = net.ErrClosed
	}
	c.mu.Unlock()
	if tc, ok := c.Conn.(*tls.Conn); ok && failed {
		// A TLS close would wait seconds more to send its alert where
		// writing has already failed.
		return tc.NetConn().Close()
	}
	if !failed {
		// The client may not have read the end of a response yet.
		buf := copyBuffers.get()
		h1.LingerClose(c.Conn, buf[:], lingerTimeout)
		copyBuffers.put(buf)
	}
	return c.Conn.Close()
}

// lingerTimeout bounds how long a closing connection waits for the client
// to close its side, as nginx's lingering_timeout: a client paused while
// its connection closes has that long to read on.
const lingerTimeout = 5 * time.Second
