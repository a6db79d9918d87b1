package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/portico/portico/proxy/h1"
	"github.com/portico/portico/reqinfo"
)

// copyFields adds a response's end-to-end fields to w's header, after any
// that a middleware set, with one slice for all the values: one Portico's
// HTTP/1 server keeps for the connection, when w is its writer or wraps
// it, else a new one.
func copyFields(w http.ResponseWriter, fields []h1.Field) {
	h := w.Header()
	var vals []string
	if fv, ok := findWriter[interface{ FieldValues(int) []string }](w); ok {
		vals = fv.FieldValues(len(fields))
	} else {
		vals = make([]string, len(fields))
	}
	for i := range fields {
		f := &fields[i]
		if f.Hop {
			continue
		}
		if old, ok := h[f.Name]; ok {
			h[f.Name] = append(old, f.Value)
			continue
		}
		vals[i] = f.Value
		h[f.Name] = vals[i : i+1 : i+1]
	}
}

// relay1xx passes an interim response read by package h1 on.
func relay1xx(w http.ResponseWriter, status int, fields []h1.Field) {
	h := make(http.Header, len(fields))
	for _, f := range fields {
		if !f.Hop {
			h[f.Name] = append(h[f.Name], f.Value)
		}
	}
	relay1xxHeader(w, status, h)
}

// respond writes the status and the body; the fields are already in
// w.Header(). A stream (a body of unknown length, or server-sent events) is
// flushed whenever the next read could wait, so that nothing the backend
// sent sits in a buffer while the proxy waits for more; a bounded body goes
// out as the server buffers it. With trailers the head is flushed at once,
// which makes an HTTP/1.1 server send the body chunked, the only framing
// that carries trailers.
//
// What has arrived of an HTTP/1.1 backend's body goes out straight from the
// connection's buffer (a small response never touches a copy buffer); the
// rest, and other bodies, through a pooled buffer (copyBuf) that reads of
// a large body fill directly from the socket.
func respond(w http.ResponseWriter, status int, body io.Reader, stream, trailers bool) error {
	w.WriteHeader(status)
	src, ok := body.(bodySource)
	if !ok {
		src = readerSource{body}
	}
	var rc *http.ResponseController
	if stream || trailers {
		rc = http.NewResponseController(w)
		if trailers || !src.Ready() {
			if err := rc.Flush(); err != nil {
				return err
			}
		}
	}
	var buf copyBuf
	defer buf.release()
	full := false
	for {
		p, err := src.Peek()
		peeked := len(p) > 0
		if !peeked && err == nil {
			b := buf.next(full)
			var n int
			n, err = src.Read(b)
			p, full = b[:n], n == len(b)
		}
		if len(p) > 0 {
			if _, werr := w.Write(p); werr != nil {
				return werr
			}
			if peeked {
				src.Discard(len(p))
			}
			if stream && !src.Ready() {
				if ferr := rc.Flush(); ferr != nil {
					return ferr
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// bodySource is a body that can show what has arrived without copying it
// and tell whether a read would wait: package h1's.
type bodySource interface {
	io.Reader
	Peek() ([]byte, error)
	Discard(n int)
	Ready() bool
}

// readerSource is any other body: nothing to peek at, and any read may wait.
type readerSource struct{ io.Reader }

func (readerSource) Peek() ([]byte, error) { return nil, nil }
func (readerSource) Discard(int)           {}
func (readerSource) Ready() bool           { return false }

// isEventStream reports a text/event-stream response, whose events must
// reach the client as they come.
func isEventStream(h http.Header) bool {
	ct := h["Content-Type"]
	if len(ct) == 0 {
		return false
	}
	const es = "text/event-stream"
	v := ct[0]
	return len(v) >= len(es) && strings.EqualFold(v[:len(es)], es) &&
		(len(v) == len(es) || v[len(es)] == ';' || v[len(es)] == ' ')
}

// addTrailers adds a body's trailer fields to h once the body is relayed:
// the announced ones as they are, others with http.TrailerPrefix, which is
// how Go's servers (Portico's HTTP/1 one too) send trailers they were not
// told of in advance.
func addTrailers(h http.Header, fields []h1.Field, announced []string) {
	for _, f := range fields {
		if f.Hop {
			continue
		}
		k := f.Name
		if !httpguts.HeaderValuesContainsToken(announced, k) {
			k = http.TrailerPrefix + k
		}
		h[k] = append(h[k], f.Value)
	}
}

// errWrongUpgrade: the backend switched to a protocol the client did not ask for.
var errWrongUpgrade = errors.New("backend switched to a protocol the client did not ask for")

// tunnel completes an upgrade the backend accepted: it takes the client's
// connection over, sends it the 101, and copies bytes both ways until both
// sides are done. A side that stops sending (half-close) is passed on as a
// half-close to the other, which may still answer.
func (f *forwarder) tunnel(w http.ResponseWriter, o *outbound, c *h1.Conn, h *h1.Head, info *reqinfo.Info) error {
	_ = c.SetReadDeadline(time.Time{})
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		c.Discard()
		return err
	}
	defer conn.Close()
	// The 101 is written past the recorder.
	info.Status = http.StatusSwitchingProtocols
	b := append(make([]byte, 0, 512), "HTTP/1.1 101 Switching Protocols\r\n"...)
	for k, vs := range w.Header() {
		if !h1.IsHopByHop(k) {
			b = appendFields(b, k, vs)
		}
	}
	for _, fl := range h.Fields {
		if !fl.Hop {
			b = appendField(b, fl.Name, fl.Value)
		}
	}
	b = append(b, "Connection: Upgrade\r\n"...)
	b = appendField(b, "Upgrade", h.Upgrade)
	b = append(b, "\r\n"...)
	if _, err := conn.Write(b); err != nil {
		return nil // the client is gone; there is nobody to tell
	}

	backend := c.NetConn()
	toBackend := make(chan error, 1)
	go func() {
		// What the server had buffered, then the connection itself: read
		// through the server's reader, the client's half-close would end
		// the request's context, and with it the backend connection.
		pending, _ := brw.Reader.Peek(brw.Reader.Buffered())
		_, err := backend.Write(pending)
		if err == nil {
			_, err = io.Copy(backend, conn)
		}
		toBackend <- halfClose(backend, err)
	}()
	_, err = conn.Write(c.Buffered())
	if err == nil {
		_, err = io.Copy(conn, backend)
	}
	if halfClose(conn, err) != nil {
		// One side failed: end the other side's copy too.
		_ = backend.Close()
		_ = conn.Close()
	}
	<-toBackend
	_ = backend.Close()
	return nil
}

// halfClose passes the end of one side's stream on to dst; a failed copy
// closes dst instead.
func halfClose(dst net.Conn, copyErr error) error {
	if copyErr != nil {
		_ = dst.Close()
		return copyErr
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return dst.Close()
}
