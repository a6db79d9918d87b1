package h1

import (
	"bytes"
	"errors"
	"io"
)

// Body reads a response body as its head framed it. It reads from the
// connection's buffer first and straight into the caller's slice for large
// reads, so a body is copied once on its way through.
type Body struct {
	c    *Conn
	mode uint8
	// left: bytes left of the body (bodyLength) or of the current chunk
	// (bodyChunked, in chunkData).
	left  int64
	chunk uint8
	err   error // sticky: the body ended, cleanly (io.EOF) or not
	// done: the body ended at its message boundary.
	done bool
	// Trailer holds a chunked body's trailer fields once Read returned
	// io.EOF.
	Trailer []Field
}

const (
	bodyNone uint8 = iota
	bodyLength
	bodyChunked
	bodyUntilClose
)

const (
	chunkSize    uint8 = iota // at a chunk-size line
	chunkData                 // in a chunk's data
	chunkEnd                  // at the CRLF after a chunk's data
	chunkTrailer              // after the last chunk, at the trailer section
)

// maxChunkLine bounds a chunk-size line, extensions included.
const maxChunkLine = 4 << 10

// Errors of a body that breaks its framing.
var (
	ErrBadChunk = errors.New("h1: malformed chunked encoding")
	// ErrTruncated is a body that ended before its framing said it would.
	ErrTruncated = errors.New("h1: connection closed before the end of the body")
)

func (b *Body) reset(h *Head, isHEAD bool) {
	b.err, b.done, b.left, b.chunk, b.Trailer = nil, false, 0, chunkSize, b.Trailer[:0]
	switch {
	case isHEAD || h.Status < 200 && h.Status != 101 || h.Status == 204 || h.Status == 304:
		b.mode = bodyNone
	case h.Status == 101:
		// The connection now belongs to the switched protocol.
		b.mode = bodyNone
		h.Close = true
	case h.Chunked:
		b.mode = bodyChunked
	case h.ContentLength >= 0:
		b.mode, b.left = bodyLength, h.ContentLength
	default:
		b.mode = bodyUntilClose
		h.Close = true
	}
	if b.mode == bodyNone || b.mode == bodyLength && b.left == 0 {
		b.finish()
	}
}

// Length is the body's length, or -1 when it is chunked or runs until close.
func (b *Body) Length() int64 {
	switch b.mode {
	case bodyNone:
		return 0
	case bodyLength:
		return b.c.head.ContentLength
	}
	return -1
}

// Arrived reports whether the rest of the body is in the connection's
// buffer, so that reading it to its end reads nothing from the backend.
func (b *Body) Arrived() bool {
	return b.err != nil || b.mode == bodyLength && int64(b.c.w-b.c.r) >= b.left
}

// Done reports whether the body was read to its end cleanly.
func (b *Body) Done() bool { return b.done }

func (b *Body) finish() {
	b.done, b.err = true, io.EOF
}

func (b *Body) fail(err error) error {
	if err == io.EOF {
		err = ErrTruncated
	}
	b.c.clean = false
	b.err = err
	return err
}

// Read reads the body; io.EOF is its clean end, any other error a broken
// one after which the connection is not reused.
func (b *Body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	switch b.mode {
	case bodyLength:
		n, err := b.readData(p[:min(int64(len(p)), b.left)])
		b.left -= int64(n)
		if err != nil {
			return n, b.fail(err)
		}
		if b.left == 0 {
			b.finish()
			return n, io.EOF
		}
		return n, nil
	case bodyUntilClose:
		n, err := b.readData(p)
		if err == io.EOF {
			b.finish()
		} else if err != nil {
			b.fail(err)
		}
		return n, b.err
	}
	return b.readChunked(p)
}

// Peek returns body bytes already received, without copying them; they
// are valid until the next call on the body or its connection. With nothing
// at hand it returns no bytes and a nil error (a Read would wait), and at
// the body's end io.EOF or the error that broke it. Discard consumes them.
func (b *Body) Peek() ([]byte, error) {
	if b.mode == bodyChunked {
		b.advance()
	}
	if b.err != nil {
		return nil, b.err
	}
	c := b.c
	p := c.buf[c.r:c.w]
	if b.mode == bodyLength || b.mode == bodyChunked {
		if b.mode == bodyChunked && b.chunk != chunkData {
			return nil, nil
		}
		p = p[:min(int64(len(p)), b.left)]
	}
	return p, nil
}

// Discard consumes n bytes that Peek returned.
func (b *Body) Discard(n int) {
	b.c.r += n
	switch b.mode {
	case bodyLength:
		if b.left -= int64(n); b.left == 0 {
			b.finish()
		}
	case bodyChunked:
		if b.left -= int64(n); b.left == 0 {
			b.chunk = chunkEnd
			b.advance()
		}
	}
}

// readData returns buffered bytes, or reads into p: straight from the
// connection when p is at least as large as the buffer.
func (b *Body) readData(p []byte) (int, error) {
	c := b.c
	if c.r == c.w {
		if len(p) >= len(c.buf) {
			n, err := c.nc.Read(p)
			if n > 0 {
				return n, nil
			}
			if err == nil {
				err = io.ErrNoProgress
			}
			return 0, err
		}
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.buf[c.r:c.w])
	c.r += n
	return n, nil
}

func (b *Body) readChunked(p []byte) (int, error) {
	for b.chunk != chunkData {
		if err := b.step(true); err != nil {
			return 0, b.fail(err)
		}
		if b.done {
			return 0, io.EOF
		}
	}
	n, err := b.readData(p[:min(int64(len(p)), b.left)])
	b.left -= int64(n)
	if err != nil {
		return n, b.fail(err)
	}
	if b.left == 0 {
		// The end of the body comes with its last data when it is here.
		b.chunk = chunkEnd
		if b.advance(); b.done {
			return n, io.EOF
		}
	}
	return n, nil
}

// advance goes through chunk framing as far as the buffer allows, so that
// Ready tells the truth. An error is kept for the next Read.
func (b *Body) advance() {
	for !b.done && b.err == nil && b.chunk != chunkData {
		if err := b.step(false); err != nil {
			if err != errWouldBlock {
				b.fail(err)
			}
			return
		}
	}
}

// errWouldBlock: step needs bytes that have not arrived yet.
var errWouldBlock = errors.New("h1: would block")

// step moves past the CRLF after a chunk's data, a chunk-size line, or the
// trailer section after the last chunk. Without block it uses only what is
// buffered, and returns errWouldBlock, having consumed nothing, when that is
// not enough.
func (b *Body) step(block bool) error {
	c := b.c
	switch b.chunk {
	case chunkEnd:
		if !block && c.w-c.r < 2 {
			return errWouldBlock
		}
		if err := c.crlf(); err != nil {
			return err
		}
		b.chunk = chunkSize
	case chunkSize:
		if !block && bytes.IndexByte(c.buf[c.r:c.w], '\n') < 0 {
			return errWouldBlock
		}
		size, err := b.chunkSize()
		if err != nil {
			return err
		}
		if size == 0 {
			b.chunk = chunkTrailer
		} else {
			b.left, b.chunk = size, chunkData
		}
	case chunkTrailer:
		if !block && !trailerBuffered(c.buf[c.r:c.w]) {
			return errWouldBlock
		}
		if err := b.readTrailer(); err != nil {
			return err
		}
		b.finish()
	}
	return nil
}

// trailerBuffered reports whether b starts with a whole trailer section.
func trailerBuffered(b []byte) bool {
	return bytes.HasPrefix(b, []byte("\r\n")) || bytes.Contains(b, []byte("\r\n\r\n"))
}

// Ready reports whether the next Read returns without waiting for the
// backend: data is at hand, or the body's end (or failure) is known.
func (b *Body) Ready() bool {
	if b.mode == bodyChunked {
		b.advance()
	}
	if b.err != nil {
		return true
	}
	avail := b.c.w > b.c.r
	if b.mode == bodyChunked {
		return avail && b.chunk == chunkData
	}
	return avail
}

// chunkSize reads a chunk-size line: hex digits, then optional extensions,
// which are ignored.
func (b *Body) chunkSize() (int64, error) {
	line, err := b.c.line(maxChunkLine)
	if err != nil {
		if err == errLineTooLong {
			err = ErrBadChunk
		}
		return 0, err
	}
	// A bare LF is refused, as net/http does: framing that parsers could
	// read differently is how requests get smuggled.
	if len(line) == 0 || line[len(line)-1] != '\r' {
		return 0, ErrBadChunk
	}
	line = line[:len(line)-1]
	var size int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto ext
		}
		if i == 15 {
			return 0, ErrBadChunk // 15 hex digits: far beyond any real chunk
		}
		size = size<<4 | int64(d)
	}
ext:
	if i == 0 || i < len(line) && line[i] != ';' {
		return 0, ErrBadChunk
	}
	for _, c := range line[i:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return 0, ErrBadChunk
		}
	}
	return size, nil
}

// readTrailer reads the trailer section after the last chunk, within the
// pool's head limit.
func (b *Body) readTrailer() error {
	left := b.c.maxHead
	for {
		line, err := b.c.line(left)
		if err != nil {
			if err == errLineTooLong {
				err = ErrHeadTooLarge
			}
			return err
		}
		if len(line) == 0 || line[len(line)-1] != '\r' {
			return ErrBadChunk // bare LF, refused as in chunk-size lines
		}
		line = line[:len(line)-1]
		if len(line) == 0 {
			return nil
		}
		if left -= len(line) + 2; left < 0 {
			return ErrHeadTooLarge
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errObsFold
		}
		f, err := parseField(string(line))
		if err != nil {
			return err
		}
		f.Hop = isHopByHop(f.Name)
		b.Trailer = append(b.Trailer, f)
	}
}

// resetRequest frames a request's body: chunked, by Content-Length, or
// none, as a request with neither has no body (RFC 9112 §6.3).
func (b *Body) resetRequest(h *Head) {
	b.err, b.done, b.left, b.chunk, b.Trailer = nil, false, 0, chunkSize, b.Trailer[:0]
	switch {
	case h.Chunked:
		b.mode = bodyChunked
	case h.ContentLength > 0:
		b.mode, b.left = bodyLength, h.ContentLength
	default:
		b.mode = bodyNone
		b.finish()
	}
}
