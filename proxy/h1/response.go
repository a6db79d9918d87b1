package h1

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// response is the http.ResponseWriter of a serverConn, reused from request
// to request. A response that the handler finishes without flushing, and
// whose body fits in the buffer, goes out in one write with a
// Content-Length; else the head goes out at the first flush or when the
// buffer fills, and the body follows chunked (HTTP/1.1, no
// Content-Length set) or as it is (Content-Length set, or until close for
// an HTTP/1.0 client). Header is reused too: a handler must not touch
// either after it returns, as net/http's contract says.
type response struct {
	c      *serverConn
	req    *http.Request
	header http.Header

	status   int   // 0 until WriteHeader (or the first Write)
	declared int64 // the handler's Content-Length, -1 without one
	written  int64 // body bytes the handler wrote
	noBody   bool  // HEAD, 204, 304: body writes are counted, not sent
	sent     bool  // the head went out (set under c.wmu)
	chunked  bool
	close    bool // close the connection after this response
	aborted  bool // the handler panicked
	wdSet    bool // the handler set a write deadline during this request (under c.wmu)
	err      error

	// buf collects what goes out next: the head, then body bytes (chunk
	// framing included) up to bufSize. Before the head is sent it holds
	// only body bytes, from headRoom on, with room for a head before them.
	buf  []byte
	base []byte    // buf's backing array, kept from one response to the next
	head []byte    // scratch for the head, kept
	wd   time.Time // the write deadline in force on the connection (under c.wmu)

	values     []string // FieldValues' slice, kept
	valuesUsed bool     // handed out for this response
}

const (
	bufSize  = 16 << 10 // body bytes held before the head must go
	headRoom = 512      // room kept before a held body for a usual head
	maxKept  = 64 << 10 // a grown buffer is dropped beyond this
)

func (w *response) reset(r *http.Request) {
	if w.header == nil {
		w.header = make(http.Header)
	} else {
		clear(w.header)
	}

	w.req = r
	w.valuesUsed = false
	w.status, w.declared, w.written = 0, -1, 0
	w.noBody, w.sent, w.chunked, w.aborted, w.wdSet, w.err = r.Method == http.MethodHead, false, false, false, false, nil
	w.close = r.Close
	if cap(w.base) < headRoom {
		w.base = make([]byte, 0, headRoom+4<<10)
	}
	w.buf = w.base[:headRoom]
}

func (w *response) Header() http.Header { return w.header }

// FieldValues returns n empty strings for the header's values to share,
// from a slice the connection keeps (once per response; later calls get a
// new one): the proxy copies a backend's fields into it without an
// allocation per response. Like the header, it is not to be used once the
// handler has returned.
func (w *response) FieldValues(n int) []string {
	if w.valuesUsed || n > maxKeptFields {
		return make([]string, n)
	}
	w.valuesUsed = true
	if cap(w.values) < n {
		w.values = make([]string, max(n, 16))
	}
	v := w.values[:n]
	clear(v)
	return v
}

// WriteHeader sends an interim (1xx) response at once, with the header
// as it is; a final status is held until the head goes out. Calls after
// the final status are ignored.
func (w *response) WriteHeader(code int) {
	if w.status != 0 || w.aborted {
		return
	}
	if code < 100 || code > 999 {
		code = http.StatusInternalServerError
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		if w.req.ProtoMinor == 0 {
			return // HTTP/1.0 has no interim responses
		}
		b := appendStatusLine(make([]byte, 0, 256), code)
		b, _ = w.appendFields(b)
		b = append(b, "\r\n"...)
		w.c.wmu.Lock()
		w.checkWriteDeadline()
		if code != http.StatusContinue || !w.c.continued {
			w.c.continued = w.c.continued || code == http.StatusContinue
			w.write(b)
		}
		w.c.wmu.Unlock()
		return
	}
	w.status = code
	if code == http.StatusSwitchingProtocols {
		w.close = true // without Hijack, nothing can follow it
	}
	if code == http.StatusNoContent || code == http.StatusNotModified || code < 200 {
		w.noBody = true
	}
	if cl := w.header["Content-Length"]; len(cl) > 0 {
		if n, ok := parseLength(cl[0]); ok && len(cl) == 1 {
			w.declared = n
		} else {
			delete(w.header, "Content-Length")
		}
	}
}

func (w *response) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.noBody {
		if w.status == http.StatusNoContent || w.status == http.StatusNotModified {
			return 0, http.ErrBodyNotAllowed
		}
		w.written += int64(len(p))
		return len(p), nil
	}
	if w.declared >= 0 && w.written+int64(len(p)) > w.declared {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.sent {
		if len(w.buf)-headRoom+len(p) <= bufSize {
			w.buf = append(w.buf, p...)
			return len(p), nil
		}
		w.sendHead(false)
	}
	return len(p), w.writeBody(p)
}

// writeBody frames p and sends it, buffered when it is small.
func (w *response) writeBody(p []byte) error {
	if w.chunked {
		w.buf = strconv.AppendInt(w.buf, int64(len(p)), 16)
		w.buf = append(w.buf, "\r\n"...)
	}
	if len(w.buf)+len(p) <= bufSize {
		w.buf = append(w.buf, p...)
		if w.chunked {
			w.buf = append(w.buf, "\r\n"...)
		}
		return w.err
	}
	bufs := net.Buffers{w.buf, p}
	if w.chunked {
		bufs = append(bufs, crlf)
	}
	w.writeDeadlineCheck()
	if _, err := bufs.WriteTo(w.c.nc); err != nil && w.err == nil {
		w.err = err
	}
	w.drained()
	return w.err
}

var crlf = []byte("\r\n")

// FlushError sends the head, if it has not gone, and what is buffered.
func (w *response) FlushError() error {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.sent {
		w.sendHead(false)
	}
	w.flush()
	return w.err
}

// Flush is FlushError for callers that look for http.Flusher.
func (w *response) Flush() { _ = w.FlushError() }

func (w *response) flush() {
	if len(w.buf) > 0 && w.err == nil {
		w.writeDeadlineCheck()
		w.write(w.buf)
	}
	w.drained()
}

// drained empties the buffer once it is written, keeping the largest
// backing array it had, up to maxKept.
func (w *response) drained() {
	if cap(w.buf) > cap(w.base) && cap(w.buf) <= maxKept {
		w.base = w.buf
	}
	w.buf = w.base[:0]
}

func (w *response) write(b []byte) {
	if _, err := w.c.nc.Write(b); err != nil && w.err == nil {
		w.err = err
	}
}

// sendHead builds the head in front of the body held so far; done says
// the handler has returned, so the held body is all there is.
func (w *response) sendHead(done bool) {
	held := w.buf[headRoom:]
	head, prefixed := w.appendFields(appendStatusLine(w.head[:0], w.status))
	// Trailers are announced in a Trailer field or, once the handler is
	// done, set with http.TrailerPrefix.
	_, announced := w.header["Trailer"]
	trailers := announced || done && prefixed
	switch {
	case w.noBody:
		if w.declared < 0 && done && w.written > 0 && w.status < 300 {
			w.declared = w.written // a HEAD response says what GET would send
		}
	case w.declared >= 0:
	case done && !trailers:
		w.declared = int64(len(held))
	case w.req.ProtoMinor == 1:
		w.chunked = true
	default:
		w.close = true // an HTTP/1.0 client reads to the close
	}
	closeAsked := hasToken(w.header["Connection"], "close")
	if !w.close {
		// Decided now, so that the head says it: a body that will not be
		// read to its end closes the connection (finishBody).
		w.close = closeAsked || w.c.srv.shutdown.Load() || w.c.body != nil && !w.c.body.keepsConn()
	}
	if w.declared >= 0 && w.status >= 200 && w.status != http.StatusNoContent && w.status != http.StatusNotModified {
		head = append(head, "Content-Length: "...)
		head = strconv.AppendInt(head, w.declared, 10)
		head = append(head, "\r\n"...)
	}
	if w.chunked {
		head = append(head, "Transfer-Encoding: chunked\r\n"...)
	}
	if w.close && !closeAsked {
		head = append(head, "Connection: close\r\n"...)
	} else if !w.close && w.req.ProtoMinor == 0 {
		head = append(head, "Connection: keep-alive\r\n"...) // HTTP/1.0 closes by default
	}
	if _, ok := w.header["Date"]; !ok {
		head = append(head, "Date: "...)
		head = append(head, httpDate()...)
		head = append(head, "\r\n"...)
	}
	head = append(head, "\r\n"...)
	if cap(head) <= maxKept {
		w.head = head
	}
	w.c.wmu.Lock()
	w.sent = true
	w.c.wmu.Unlock()
	// The head goes in front of the held body: in the room kept for it,
	// or the buffer is rebuilt when it is larger.
	if len(head) <= headRoom {
		start := headRoom - len(head)
		copy(w.buf[start:], head)
		w.buf = w.buf[start:]
		if w.chunked && len(held) > 0 {
			w.buf = append(w.buf[:len(head)], w.chunk(held)...)
		}
	} else {
		w.buf = append(append([]byte(nil), head...), w.chunk(held)...)
	}
	if w.noBody {
		w.buf = w.buf[:len(head)]
	}
}

// chunk returns held framed as one chunk when the body is chunked.
func (w *response) chunk(held []byte) []byte {
	if !w.chunked || len(held) == 0 {
		return held
	}
	b := strconv.AppendInt(make([]byte, 0, len(held)+16), int64(len(held)), 16)
	b = append(b, "\r\n"...)
	b = append(b, held...)
	return append(b, "\r\n"...)
}

// appendFields writes the handler's header fields but those the server
// frames itself; a field that is not valid on the wire is left out. It
// reports whether a field set with http.TrailerPrefix was seen.
func (w *response) appendFields(b []byte) (_ []byte, prefixed bool) {
	announced := w.header["Trailer"]
	for k, vs := range w.header {
		switch k {
		case "Content-Length", "Transfer-Encoding":
			continue
		}
		if strings.HasPrefix(k, http.TrailerPrefix) {
			prefixed = true
			continue // a trailer, sent after the body
		}
		if !ValidFieldName(k) || announced != nil && hasToken(announced, k) {
			continue // not for the wire, or a trailer
		}
		for _, v := range vs {
			if ValidFieldValue(v) {
				b = appendField(b, k, v)
			}
		}
	}
	return b, prefixed
}

// finish completes the response after the handler returned and reports
// whether the connection may serve another request.
func (w *response) finish() bool {
	if w.aborted {
		return false
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.sent {
		w.sendHead(true)
	}
	if w.chunked {
		w.buf = append(w.buf, "0\r\n"...)
		w.buf = w.appendTrailers(w.buf)
		w.buf = append(w.buf, "\r\n"...)
	}
	w.flush()
	if w.declared >= 0 && !w.noBody && w.written < w.declared {
		return false // the client waits for bytes that will not come
	}
	return w.err == nil && !w.close
}

// appendTrailers writes the trailer fields: those announced in Trailer
// and those set with http.TrailerPrefix.
func (w *response) appendTrailers(b []byte) []byte {
	for _, names := range w.header["Trailer"] {
		for name := range strings.SplitSeq(names, ",") {
			k := http.CanonicalHeaderKey(strings.TrimSpace(name))
			for _, v := range w.header[k] {
				if ValidFieldName(k) && ValidFieldValue(v) {
					b = appendField(b, k, v)
				}
			}
		}
	}
	for k, vs := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && ValidFieldName(name) {
			for _, v := range vs {
				if ValidFieldValue(v) {
					b = appendField(b, name, v)
				}
			}
		}
	}
	return b
}

func appendField(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, ": "...)
	b = append(b, v...)
	return append(b, "\r\n"...)
}

// abort gives up on the response of a handler that panicked: the
// connection closes, cutting short whatever was sent.
func (w *response) abort() { w.aborted = true }

// Hijack hands the connection over (WebSocket, h2c upgrade).
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) { return w.c.hijack() }

// SetReadDeadline and SetWriteDeadline are what http.ResponseController
// calls; the read deadline also bounds the server's own reads of the body.
func (w *response) SetReadDeadline(t time.Time) error {
	w.c.setReadDeadline(t)
	return nil
}

func (w *response) SetWriteDeadline(t time.Time) error {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	w.wdSet = true
	if t.Equal(w.wd) {
		return nil
	}
	w.wd = t
	return w.c.nc.SetWriteDeadline(t)
}

// WriteDeadline is the write deadline in force, so that a handler renewing
// its own can skip a renewal that changes little.
func (w *response) WriteDeadline() time.Time {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	return w.wd
}

// AfterClientGone arranges for f to run when the client closes the
// connection before the handler returns, as context.AfterFunc on the
// request's context does, with fewer allocations; stop unregisters f and
// reports whether it had not run.
func (w *response) AfterClientGone(f func()) (stop func() bool) { return w.c.afterClientGone(f) }

// EnableFullDuplex: the body may always be read while the response is
// written.
func (w *response) EnableFullDuplex() error { return nil }

// writeDeadlineCheck clears a write deadline that an earlier request set
// and this one did not, before it cuts this response short. A write
// deadline outlives its request so that a handler renewing it per request
// (send_timeout) can keep one that is still far off, by setting it again
// to what WriteDeadline returns, which costs nothing: moving it is a timer
// update.
func (w *response) writeDeadlineCheck() {
	w.c.wmu.Lock()
	w.checkWriteDeadline()
	w.c.wmu.Unlock()
}

// checkWriteDeadline is writeDeadlineCheck with c.wmu held.
func (w *response) checkWriteDeadline() {
	if !w.wdSet && !w.wd.IsZero() {
		w.wd = time.Time{}
		_ = w.c.nc.SetWriteDeadline(w.wd)
	}
}

// clearWriteDeadline clears the write deadline for a handler that takes
// the connection over.
func (c *serverConn) clearWriteDeadline() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.resp.wd.IsZero() {
		c.resp.wd = time.Time{}
		_ = c.nc.SetWriteDeadline(c.resp.wd)
	}
}

func hasToken(vs []string, token string) bool {
	for _, v := range vs {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// statusLines holds "HTTP/1.1 NNN Text\r\n" for every code with a text.
var statusLines = func() (t [600][]byte) {
	for code := 100; code < len(t); code++ {
		if text := http.StatusText(code); text != "" {
			t[code] = []byte("HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n")
		}
	}
	return t
}()

func appendStatusLine(b []byte, code int) []byte {
	if code < len(statusLines) && statusLines[code] != nil {
		return append(b, statusLines[code]...)
	}
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	return append(b, " \r\n"...)
}

// httpDate returns the Date value for now, formatted once a second.
func httpDate() []byte {
	now := time.Now().Unix()
	if d := dateCache.Load(); d != nil && d.sec == now {
		return d.text
	}
	d := &cachedDate{sec: now, text: time.Unix(now, 0).UTC().AppendFormat(nil, http.TimeFormat)}
	dateCache.Store(d)
	return d.text
}

type cachedDate struct {
	sec  int64
	text []byte
}

var dateCache atomic.Pointer[cachedDate]
