package compress

import (
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// encoder is what the three libraries' writers have in common.
type encoder interface {
	io.WriteCloser
	Flush() error
	Reset(io.Writer)
}

// encoding is one content coding with a pool of its encoders: creating one
// costs far more than a response (zstd's and brotli's allocate their
// windows), so they are reset and reused.
type encoding struct {
	name string
	pool sync.Pool
}

// Levels: fast settings that still compress text well, chosen for a proxy
// that encodes on the fly rather than ahead of time.
const (
	gzipLevel   = 5
	brotliLevel = 4
	zstdWindow  = 1 << 20 // small enough for every HTTP client's decoder
)

var encodings = map[string]*encoding{
	"gzip": {name: "gzip", pool: sync.Pool{New: func() any {
		w, _ := gzip.NewWriterLevel(io.Discard, gzipLevel)
		return encoder(w)
	}}},
	"br": {name: "br", pool: sync.Pool{New: func() any {
		return encoder(brotli.NewWriterLevel(io.Discard, brotliLevel))
	}}},
	"zstd": {name: "zstd", pool: sync.Pool{New: func() any {
		w, _ := zstd.NewWriter(io.Discard, zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(zstdWindow), zstd.WithLowerEncoderMem(true))
		return encoder(w)
	}}},
}

func (e *encoding) get(w io.Writer) encoder {
	enc := e.pool.Get().(encoder)
	enc.Reset(w)
	return enc
}

func (e *encoding) put(enc encoder) {
	enc.Reset(io.Discard) // drop the reference to the response
	e.pool.Put(enc)
}

// negotiate picks, of the server's encodings in order of preference, the
// one the client rates highest in Accept-Encoding (RFC 9110 12.5.3): an
// explicit q beats "*", q=0 refuses, and among equal ratings the server's
// order decides. It allocates nothing.
func negotiate(accept []string, prefs []*encoding) *encoding {
	var q [8]float64
	var named [8]bool
	star := -1.0
	for _, line := range accept {
		for line != "" {
			var item string
			item, line, _ = strings.Cut(line, ",")
			token, params, _ := strings.Cut(item, ";")
			token = strings.TrimSpace(token)
			w := qvalue(params)
			if token == "*" {
				star = w
				continue
			}
			for i, e := range prefs {
				if i < len(q) && strings.EqualFold(token, e.name) {
					q[i], named[i] = w, true
				}
			}
		}
	}
	var best *encoding
	bestQ := 0.0
	for i, e := range prefs {
		if i >= len(q) {
			break
		}
		w := q[i]
		if !named[i] {
			w = max(star, 0)
		}
		if w > bestQ {
			best, bestQ = e, w
		}
	}
	return best
}

// qvalue reads ";q=0.5" from an item's parameters; absent means 1, and an
// unreadable one 0, so that a garbled preference never picks an encoding.
func qvalue(params string) float64 {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "q") {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || f < 0 || f > 1 {
			return 0
		}
		return f
	}
	return 1
}
