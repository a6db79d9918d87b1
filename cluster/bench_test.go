package cluster

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/portico/portico/config"
	"github.com/portico/portico/middleware"
	"github.com/portico/portico/reqinfo"
)

type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) WriteHeader(int)             {}
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkRateLimit measures what a rate_limit adds to a request, with
// scope local and with scope global against a real redis-server on
// loopback, and reports the median and the 99th percentile of single
// decisions besides the mean: "go test -run XXX -bench RateLimit ./cluster".
func BenchmarkRateLimit(b *testing.B) {
	t := &testing.T{}
	f := newFixture(t, `timeout = "1s"`)
	if t.Failed() || t.Skipped() {
		b.Skip("redis-server not started")
	}
	defer func() { _ = f.c.Close() }()
	for _, scope := range []string{config.ScopeLocal, config.ScopeGlobal} {
		b.Run(scope, func(b *testing.B) {
			cfg, err := config.Parse(fmt.Appendf(nil, `
[cluster]
redis_url = %q
[middlewares.m]
type = "rate_limit"
rate = 1000000000
burst = 1000
scope = %q
[pools.p]
backends = [{ url = "http://127.0.0.1:1" }]
[[routes]]
pool = "p"
middlewares = ["m"]
`, f.redis.URL(), scope), "bench.toml")
			if err != nil {
				b.Fatal(err)
			}
			set, err := middleware.Build(cfg.Middlewares, nil, middleware.Env{Log: slog.New(slog.DiscardHandler), Global: f.c})
			if err != nil {
				b.Fatal(err)
			}
			defer set.Close()
			h, err := set.Chain([]string{"m"}, "r", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			if err != nil {
				b.Fatal(err)
			}
			req, _ := http.NewRequest("GET", "http://app.example/", nil)
			ctx, info := reqinfo.NewContext(req.Context())
			req = req.WithContext(ctx)
			w := &nopWriter{h: http.Header{}}
			took := make([]time.Duration, 0, 1<<16)
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				i++
				*info = reqinfo.Info{Start: time.Now(), ClientIP: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})}
				start := time.Now()
				h.ServeHTTP(w, req)
				if len(took) < cap(took) {
					took = append(took, time.Since(start))
				}
				if w.h.Get("Retry-After") != "" {
					b.Fatal("refused")
				}
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(took[len(took)*99/100].Nanoseconds()), "p99-ns")
			if f.errs.get(OpRateLimit) != 0 {
				b.Fatalf("%d redis failures", f.errs.get(OpRateLimit))
			}
		})
	}
}
