package middleware

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/portico/portico/config"
	"github.com/portico/portico/reqinfo"
)

// requestID is type "request_id". Each request gets an ID, a UUIDv7 (time
// ordered, so IDs sort by arrival in logs), unless the peer is a trusted
// proxy that sent one; the backend gets it in the request, the client in
// the response, and the access log and Portico's own log lines about the
// request carry it.
type requestID struct{ header string }

// maxRequestIDLen bounds an ID taken from a trusted peer.
const maxRequestIDLen = 128

func newRequestID(o *config.RequestID) Middleware { return &requestID{header: o.Header} }

func (m *requestID) Wrap(next http.Handler, _ string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := reqinfo.From(r.Context())
		var vals []string
		if in := r.Header[m.header]; info != nil && info.TrustedPeer && len(in) == 1 && validRequestID(in[0]) {
			vals = in
		} else {
			vals = []string{newUUIDv7(time.Now())}
			r.Header[m.header] = vals
		}
		if info != nil {
			info.RequestID = vals[0]
		}
		// Net/http never changes header values in place, so the request's
		// slice can serve the response too.
		w.Header()[m.header] = vals
		next.ServeHTTP(w, r)
	})
}

// validRequestID accepts printable ASCII without spaces or quotes, so that
// an ID taken from a peer cannot break a log line or a header.
func validRequestID(s string) bool {
	if s == "" || len(s) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// newUUIDv7 makes an RFC 9562 version 7 UUID: 48 bits of Unix milliseconds,
// then 74 random bits. math/rand/v2's generator is per thread and seeded
// from the system's randomness: unique IDs without a system call.
func newUUIDv7(now time.Time) string {
	var u [16]byte
	binary.BigEndian.PutUint64(u[0:8], uint64(now.UnixMilli())<<16|rand.Uint64()&0xfff)
	binary.BigEndian.PutUint64(u[8:16], rand.Uint64())
	u[6] = u[6]&0x0f | 0x70 // version 7
	u[8] = u[8]&0x3f | 0x80 // variant 10
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], u[10:16])
	return string(s[:])
}
