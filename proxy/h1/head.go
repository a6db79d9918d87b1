package h1

import (
	"errors"
	"net/textproto"
	"strings"
)

// Head is a parsed message head: a response's (Status) or a request's
// (Method, Target, Minor). Its strings share one allocation, the head's
// text; Fields is reused from one message to the next on a Conn, so a Head
// is valid until the next head is read on the same connection.
type Head struct {
	Status int
	Method string
	Target string
	Minor  int // of HTTP/1.x, in a request
	// Fields in the order received, names canonical. Hop marks the
	// hop-by-hop ones (the fixed list and those named in Connection),
	// which a proxy must not pass on; Transfer-Encoding and Trailer are
	// among them, the framing being the proxy's own.
	Fields []Field
	// ContentLength is -1 when the response gave none.
	ContentLength int64
	Chunked       bool
	// Close: the backend will close the connection after this response.
	Close bool
	// Upgrade is the protocol a 101 switches to.
	Upgrade string
	// Trailer holds the names a chunked response announced in Trailer.
	Trailer []string
}

// Field is one header or trailer field.
type Field struct {
	Name, Value string
	Hop         bool
}

// Errors a malformed response head yields. They all make the exchange fail
// with the connection dropped; ErrHeadTooLarge when the head exceeds the
// pool's limit.
var (
	ErrHeadTooLarge = errors.New("h1: response header block too large")
	errStatusLine   = errors.New("h1: malformed status line")
	errFieldLine    = errors.New("h1: malformed header field")
	errObsFold      = errors.New("h1: obsolete line folding in response header")
	errLength       = errors.New("h1: invalid or conflicting Content-Length")
	errTE           = errors.New("h1: unsupported Transfer-Encoding")
	errTE10         = errors.New("h1: Transfer-Encoding in an HTTP/1.0 message")
	errTEAndLength  = errors.New("h1: both Transfer-Encoding and Content-Length")
)

// parseHead parses s, a complete head (status line, fields, and the empty
// line that ends them) into h. fields is the slice to reuse for h.Fields.
func parseHead(s string, h *Head, fields []Field) error {
	*h = Head{ContentLength: -1, Fields: fields[:0], Trailer: h.Trailer[:0]}
	line, rest := nextLine(s)
	minor, err := parseStatusLine(line, h)
	if err != nil {
		return err
	}
	h.Fields, err = parseFields(rest, h.Fields)
	if err != nil {
		return err
	}
	return h.frame(minor)
}

// parseStatusLine reads "HTTP/1.x NNN reason" and returns x.
func parseStatusLine(line string, h *Head) (int, error) {
	// "HTTP/1.1 200" is the shortest form; the reason may be empty or absent.
	if len(line) < 12 || line[:7] != "HTTP/1." || line[8] != ' ' ||
		(line[7] != '0' && line[7] != '1') || (len(line) > 12 && line[12] != ' ') {
		return 0, errStatusLine
	}
	code := 0
	for _, c := range []byte(line[9:12]) {
		if c < '0' || c > '9' {
			return 0, errStatusLine
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return 0, errStatusLine
	}
	if !ValidFieldValue(line[12:]) {
		return 0, errStatusLine
	}
	h.Status = code
	return int(line[7] - '0'), nil
}

// parseFields parses field lines up to the empty line that ends s and
// appends them to fields.
func parseFields(s string, fields []Field) ([]Field, error) {
	for {
		var line string
		line, s = nextLine(s)
		if line == "" {
			return fields, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			// RFC 9112 §5.2 lets a proxy reject obs-fold in a response with 502.
			return fields, errObsFold
		}
		f, err := parseField(line)
		if err != nil {
			return fields, err
		}
		fields = append(fields, f)
	}
}

// nextLine splits s after its first line, dropping the CRLF (or bare LF).
func nextLine(s string) (line, rest string) {
	i := strings.IndexByte(s, '\n')
	if i < 0 {
		return s, ""
	}
	line, rest = s[:i], s[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

func parseField(line string) (Field, error) {
	colon := strings.IndexByte(line, ':')
	if colon <= 0 {
		return Field{}, errFieldLine
	}
	name := line[:colon]
	// One pass checks that the name is a token (no whitespace before the
	// colon, RFC 9112 §5.1: a lenient parser upstream could read the field
	// differently) and whether it is in canonical form already, as most
	// senders write names, which then costs no copy.
	var flags uint8
	half := upperHalf // the first letter is a capital in canonical form
	for i := 0; i < len(name); i++ {
		f := nameStates[(half|int(name[i]))&(2*upperHalf-1)] // masked: no bounds check
		flags |= f
		half = int(f&dash) << 6 // upperHalf after a '-'
	}
	if flags&notToken != 0 {
		return Field{}, errFieldLine
	}
	value := trimOWS(line[colon+1:])
	if !ValidFieldValue(value) {
		return Field{}, errFieldLine
	}
	if flags&notCanonical != 0 {
		name = textproto.CanonicalMIMEHeaderKey(name)
	}
	return Field{Name: name, Value: value}, nil
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// frame reads the framing and connection fields and marks the hop-by-hop
// ones. RFC 9112 §6.3 lets a recipient of both Transfer-Encoding and
// Content-Length frame by the former; a proxy that did so could disagree
// with the next hop, so both are refused, as are differing lengths.
func (h *Head) frame(minor int) error {
	keepAlive := minor == 1
	var te, cl int
	for i := range h.Fields {
		f := &h.Fields[i]
		switch f.Name {
		case "Content-Length":
			n, ok := parseLength(f.Value)
			if !ok || cl > 0 && n != h.ContentLength {
				return errLength
			}
			h.ContentLength = n
			cl++
		case "Transfer-Encoding":
			// Only a single, final "chunked": anything else is an encoding
			// the proxy would have to decode to find the message's end.
			if te > 0 || !strings.EqualFold(f.Value, "chunked") {
				return errTE
			}
			if minor == 0 {
				// RFC 9112 §6.1: faulty framing in an HTTP/1.0 message.
				return errTE10
			}
			h.Chunked = true
			te++
		case "Connection":
			for tok := range strings.SplitSeq(f.Value, ",") {
				tok = trimOWS(tok)
				switch {
				case strings.EqualFold(tok, "close"):
					h.Close = true
				case strings.EqualFold(tok, "keep-alive"):
					keepAlive = true
				case tok != "":
					h.markHop(tok)
				}
			}
		case "Upgrade":
			h.Upgrade = f.Value
		case "Trailer":
			h.Trailer = append(h.Trailer, f.Value)
		}
		if isHopByHop(f.Name) {
			f.Hop = true
		}
	}
	if te > 0 && cl > 0 {
		return errTEAndLength
	}
	if !keepAlive {
		h.Close = true
	}
	return nil
}

// markHop marks the fields a Connection header names.
func (h *Head) markHop(name string) {
	for i := range h.Fields {
		if strings.EqualFold(h.Fields[i].Name, name) {
			h.Fields[i].Hop = true
		}
	}
}

// parseLength parses a Content-Length value: digits only, no sign, no
// list, no overflow.
func parseLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false // 18 digits cannot overflow int64
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// isHopByHop reports whether a canonical name is one of the fields that
// concern only one connection (RFC 9110 §7.6.1, plus the non-standard
// Proxy-Connection and Keep-Alive that clients still send).
func isHopByHop(name string) bool {
	switch name {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// IsHopByHop is isHopByHop for callers writing requests.
func IsHopByHop(name string) bool { return isHopByHop(name) }

// nameStates drives the check of a field name in one pass: indexed by the
// byte, plus upperHalf when it is the first of the name or follows a '-',
// where the canonical form has a capital. Each entry says whether the byte
// is no token (RFC 9110 §5.6.2), whether its case differs from the
// canonical form's, and whether it is a '-'.
var nameStates = func() (t [2 * upperHalf]uint8) {
	for _, half := range []int{0, upperHalf} {
		for c := 0; c < 256; c++ {
			var f uint8
			switch {
			case 'a' <= c && c <= 'z':
				if half != 0 {
					f = notCanonical
				}
			case 'A' <= c && c <= 'Z':
				if half == 0 {
					f = notCanonical
				}
			case c == '-':
				f = dash
			case '0' <= c && c <= '9' || c < 0x80 && strings.IndexByte("!#$%&'*+.^_`|~", byte(c)) >= 0:
			default:
				f = notToken
			}
			t[half|c] = f
		}
	}
	return t
}()

const (
	upperHalf = 256
	// The flags of nameStates' entries; dash << 6 is upperHalf.
	notToken     = 1
	notCanonical = 2
	dash         = 4
)

// ValidFieldName reports whether name is a token, as a request's field
// names must be before they are written.
func ValidFieldName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if nameStates[name[i]]&notToken != 0 {
			return false
		}
	}
	return true
}

// ValidFieldValue reports whether v may be written as a field value: no
// CR, LF, NUL or other control characters but tab. It tests eight bytes
// at a time, since every field of every message passes here: a word with
// no byte below 0x20 and none equal to 0x7f needs no closer look (bytes of
// 0x80 and up, obs-text, are allowed).
func ValidFieldValue(v string) bool {
	const (
		ones   = 0x0101010101010101
		highs  = 0x80 * ones
		spaces = 0x20 * ones
		dels   = 0x7f * ones
	)
	for ; len(v) >= 8; v = v[8:] {
		w := v[:8] // of known length: one bounds check, one load
		x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
			uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
		y := x ^ dels // a 0x7f byte becomes zero
		if ((x-spaces)&^x|(y-ones)&^y)&highs != 0 && !validValueBytes(w) {
			return false
		}
	}
	return validValueBytes(v)
}

func validValueBytes(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
