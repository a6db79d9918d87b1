package accesslog

import (
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// appendJSON writes one JSON object and a newline. Every string is escaped
// (a client controls the path, the user agent and the referer); durations
// are milliseconds with microsecond precision.
func appendJSON(b []byte, e *fields) []byte {
	i := e.info
	b = append(b, `{"time":"`...)
	b = appendISOTime(b, i.Start)
	b = append(b, `","client_ip":"`...)
	if i.ClientIP.IsValid() {
		b = i.ClientIP.AppendTo(b)
	}
	b = append(b, '"')
	b = field(b, "method", e.method)
	b = field(b, "host", e.host)
	b = append(b, `,"path":`...)
	b = appendString(b, e.path, e.query)
	b = field(b, "proto", e.proto)
	b = field(b, "tls", tlsVersion(e.tls))
	b = num(b, "status", int64(i.Status))
	b = num(b, "bytes_in", i.BytesIn)
	b = num(b, "bytes_out", i.BytesOut)
	b = millis(b, "duration_ms", e.dur)
	b = field(b, "route", i.Route)
	b = field(b, "pool", i.Pool)
	b = field(b, "backend", i.Backend)
	b = millis(b, "backend_ttfb_ms", i.BackendTTFB)
	b = num(b, "attempts", int64(i.Attempts))
	b = field(b, "request_id", i.RequestID)
	b = field(b, "user", i.User)
	b = field(b, "user_agent", e.ua)
	b = field(b, "referer", e.ref)
	return append(b, "}\n"...)
}

func field(b []byte, name, v string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, v, "")
}

func num(b []byte, name string, v int64) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return strconv.AppendInt(b, v, 10)
}

func millis(b []byte, name string, d time.Duration) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendMillis(b, d.Microseconds())
}

// appendMillis writes us microseconds as milliseconds, as the shortest
// decimal (what strconv.AppendFloat writes for us/1000), without the
// float formatting.
func appendMillis(b []byte, us int64) []byte {
	if us < 0 {
		b, us = append(b, '-'), -us
	}
	b = strconv.AppendInt(b, us/1000, 10)
	frac := us % 1000
	if frac == 0 {
		return b
	}
	digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
	n := 3
	for digits[n-1] == '0' {
		n--
	}
	return append(append(b, '.'), digits[:n]...)
}

const hexDigits = "0123456789abcdef"

// appendString writes s, and "?"+query when query is set, as one JSON
// string. Invalid UTF-8 becomes U+FFFD, so the line stays valid JSON.
func appendString(b []byte, s, query string) []byte {
	b = append(b, '"')
	b = appendEscaped(b, s)
	if query != "" {
		b = append(b, '?')
		b = appendEscaped(b, query)
	}
	return append(b, '"')
}

func appendEscaped(b []byte, s string) []byte {
	for {
		i := plainPrefix(s)
		b = append(b, s[:i]...)
		if i == len(s) {
			return b
		}
		c, size := s[i], 1
		switch {
		case c >= 0x80:
			var r rune
			if r, size = utf8.DecodeRuneInString(s[i:]); r == utf8.RuneError && size == 1 {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, s[i:i+size]...)
			}
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		s = s[i+size:]
	}
}

// plainPrefix returns the length of the start of s that JSON escaping
// leaves as it is: printable ASCII but quote and backslash. Most of a line
// is, so it looks at eight bytes at a time.
func plainPrefix(s string) int {
	const (
		ones  = 0x0101010101010101
		highs = 0x80 * ones
	)
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := s[i : i+8]
		x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
			uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
		// A byte of 0x80 or more has its high bit; one below 0x20, or
		// equal to '"', '\\' or 0x7f (zero after the xor), sets it in the
		// differences.
		q, bs, del := x^('"'*ones), x^('\\'*ones), x^(0x7f*ones)
		if (x|(x-0x20*ones)&^x|(q-ones)&^q|(bs-ones)&^bs|(del-ones)&^del)&highs != 0 {
			break
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			break
		}
	}
	return i
}

// appendCombined writes the Apache/nginx "combined" format:
//
//	client - user [time] "METHOD path PROTO" status bytes "referer" "user-agent"
//
// Quotes, backslashes and bytes outside printable ASCII inside quoted
// fields are written \xHH, as nginx does, so a client cannot break the line.
func appendCombined(b []byte, e *fields) []byte {
	i := e.info
	if i.ClientIP.IsValid() {
		b = i.ClientIP.AppendTo(b)
	} else {
		b = append(b, '-')
	}
	b = append(b, " - "...)
	if i.User == "" {
		b = append(b, '-')
	} else {
		b = appendNginx(b, i.User, true)
	}
	b = append(b, " ["...)
	b = appendCLFTime(b, i.Start)
	b = append(b, `] "`...)
	b = appendNginx(b, e.method, false)
	b = append(b, ' ')
	b = appendNginx(b, e.path, false)
	if e.query != "" {
		b = append(b, '?')
		b = appendNginx(b, e.query, false)
	}
	b = append(b, ' ')
	b = appendNginx(b, e.proto, false)
	b = append(b, `" `...)
	b = strconv.AppendInt(b, int64(i.Status), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, i.BytesOut, 10)
	b = append(b, ` "`...)
	b = appendNginx(b, dash(e.ref), false)
	b = append(b, `" "`...)
	b = appendNginx(b, dash(e.ua), false)
	return append(b, "\"\n"...)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// appendNginx escapes as nginx's access log does; noSpace also escapes
// spaces, for the unquoted user field.
func appendNginx(b []byte, s string, noSpace bool) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || (noSpace && c == ' ') {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
			start = i + 1
		}
	}
	return append(b, s[start:]...)
}

// Times are UTC and written by hand: time.Format's layout parsing costs
// more than the rest of a line.

// appendISOTime writes 2006-01-02T15:04:05.000Z.
func appendISOTime(b []byte, t time.Time) []byte {
	b = isoSeconds.append(b, t)
	b = append(b, '.')
	b = appendInt(b, t.Nanosecond()/1e6, 3)
	return append(b, 'Z')
}

// appendCLFTime writes 02/Jan/2006:15:04:05 +0000.
func appendCLFTime(b []byte, t time.Time) []byte { return clfSeconds.append(b, t) }

// secondCache keeps the text of the second a line was made in, which lines
// share for a second: the calendar computation costs more than the rest of
// a line's numbers.
type secondCache struct {
	format func(b []byte, y int, mo time.Month, d, h, mi, s int) []byte
	last   atomic.Pointer[cachedSecond]
}

type cachedSecond struct {
	unix int64
	text []byte
}

func (c *secondCache) append(b []byte, t time.Time) []byte {
	unix := t.Unix()
	s := c.last.Load()
	if s == nil || s.unix != unix {
		t = t.UTC()
		y, mo, d := t.Date()
		h, mi, sec := t.Clock()
		s = &cachedSecond{unix: unix, text: c.format(nil, y, mo, d, h, mi, sec)}
		c.last.Store(s)
	}
	return append(b, s.text...)
}

var months = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

var (
	isoSeconds = secondCache{format: func(b []byte, y int, mo time.Month, d, h, mi, s int) []byte {
		b = appendInt(b, y, 4)
		b = append(b, '-')
		b = appendInt(b, int(mo), 2)
		b = append(b, '-')
		b = appendInt(b, d, 2)
		b = append(b, 'T')
		return appendClock(b, h, mi, s)
	}}
	clfSeconds = secondCache{format: func(b []byte, y int, mo time.Month, d, h, mi, s int) []byte {
		b = appendInt(b, d, 2)
		b = append(b, '/')
		b = append(b, months[mo-1]...)
		b = append(b, '/')
		b = appendInt(b, y, 4)
		b = append(b, ':')
		b = appendClock(b, h, mi, s)
		return append(b, " +0000"...)
	}}
)

// appendClock writes 15:04:05.
func appendClock(b []byte, h, mi, s int) []byte {
	b = appendInt(b, h, 2)
	b = append(b, ':')
	b = appendInt(b, mi, 2)
	b = append(b, ':')
	return appendInt(b, s, 2)
}

// appendInt writes n with at least width digits.
func appendInt(b []byte, n, width int) []byte {
	var d [20]byte
	i := len(d)
	for n >= 10 || width > 1 {
		i--
		d[i] = byte('0' + n%10)
		n /= 10
		width--
	}
	i--
	d[i] = byte('0' + n)
	return append(b, d[i:]...)
}
