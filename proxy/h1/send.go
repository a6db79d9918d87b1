package h1

import (
	"errors"
	"io"
	"net/http"
	"strconv"
)

// SrcError is a request body that could not be read (the client's side
// failed), as opposed to the backend connection failing.
type SrcError struct{ Err error }

func (e *SrcError) Error() string { return "reading request body: " + e.Err.Error() }
func (e *SrcError) Unwrap() error { return e.Err }

// ErrShortBody is a request body that ended before its Content-Length.
var ErrShortBody = errors.New("h1: request body shorter than its Content-Length")

// chunkHead is room for a chunk-size line before a chunk's data in buf.
const chunkHead = 18

// SendBody sends a request body read from src through buf: exactly length
// bytes when length >= 0, else chunked, ending with the fields trailer
// returns, which it calls after src's end (net/http fills a request's
// trailers only then). Each read from src is sent at once, so a body
// streams as it arrives. Errors reading src are *SrcError.
//
// It may run on its own goroutine while another reads the response, so it
// touches nothing of c but the connection: after an error the caller must
// Discard c.
func (c *Conn) SendBody(src io.Reader, length int64, buf []byte, trailer func() http.Header) error {
	if length >= 0 {
		return c.sendLength(src, length, buf)
	}
	for {
		n, rerr := src.Read(buf[chunkHead : len(buf)-2])
		if n > 0 {
			var hex [16]byte
			size := strconv.AppendInt(hex[:0], int64(n), 16)
			start := chunkHead - len(size) - 2
			copy(buf[start:], size)
			buf[chunkHead-2], buf[chunkHead-1] = '\r', '\n'
			end := chunkHead + n
			buf[end], buf[end+1] = '\r', '\n'
			if err := c.write(buf[start : end+2]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return c.sendLastChunk(buf, trailer)
		}
		if rerr != nil {
			return &SrcError{rerr}
		}
	}
}

func (c *Conn) sendLength(src io.Reader, length int64, buf []byte) error {
	for length > 0 {
		n, rerr := src.Read(buf[:min(int64(len(buf)), length)])
		if n > 0 {
			length -= int64(n)
			if err := c.write(buf[:n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF && length > 0 {
			rerr = ErrShortBody
		}
		if rerr != nil && rerr != io.EOF {
			return &SrcError{rerr}
		}
	}
	return nil
}

// sendLastChunk writes the last chunk and the trailer section.
func (c *Conn) sendLastChunk(buf []byte, trailer func() http.Header) error {
	b := append(buf[:0], "0\r\n"...)
	if trailer != nil {
		for k, vs := range trailer() {
			if !ValidFieldName(k) || isHopByHop(k) || k == "Content-Length" {
				continue
			}
			for _, v := range vs {
				if ValidFieldValue(v) {
					b = append(append(append(append(b, k...), ": "...), v...), "\r\n"...)
				}
			}
		}
	}
	return c.write(append(b, "\r\n"...))
}

func (c *Conn) write(b []byte) error {
	_, err := c.nc.Write(b)
	return err
}
