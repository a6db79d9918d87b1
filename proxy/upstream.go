package proxy

import (
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/portico/portico/balancer"
	"github.com/portico/portico/config"
	"github.com/portico/portico/metrics"
	"github.com/portico/portico/proxy/h1"
)

// upstream is a pool at run time: the balancer's pool, the connections to
// its backends, and the retry rule.
type upstream struct {
	pool    *balancer.Pool
	retries int
	budget  *retryBudget
	stats   *metrics.Pool // nil without metrics

	// HTTP/1.1 connections, by backend index (balancer.Backend.Index); nil
	// for h2c pools. h1Only (https pools) offers only http/1.1 in ALPN, for
	// upgrades, which HTTP/2 cannot carry.
	h1, h1Only []*h1.Pool
	// h2 marks the https backends that chose HTTP/2 in ALPN.
	h2 []atomic.Bool
	// rt reaches HTTP/2 backends; rtScheme is the scheme its URLs take.
	rt       *http.Transport
	rtScheme string

	responseHeaderTimeout time.Duration
}

func newUpstream(name string, pc *config.Pool, log *slog.Logger, m *metrics.Metrics) (*upstream, error) {
	backends := make([]*balancer.Backend, 0, len(pc.Backends))
	hosts := make([]string, 0, len(pc.Backends))
	for _, bc := range pc.Backends {
		b, err := balancer.NewBackend(bc.Parsed, bc.Weight)
		if err != nil {
			return nil, err
		}
		backends = append(backends, b)
		hosts = append(hosts, bc.Parsed.Host)
	}
	pool, err := balancer.NewPool(name, backends, poolOptions(pc, log))
	if err != nil {
		return nil, err
	}
	u := &upstream{
		pool:                  pool,
		retries:               pc.Retries,
		budget:                newRetryBudget(pc.RetryBudgetPercent),
		stats:                 m.Pool(name, hosts),
		responseHeaderTimeout: pc.ResponseHeaderTimeout.Duration,
	}
	u.connect(pc)
	return u, nil
}

// h1Pool returns the HTTP/1.1 connections to b, or nil when b is reached
// over HTTP/2.
func (u *upstream) h1Pool(b *balancer.Backend, upgrade bool) *h1.Pool {
	if u.h1 == nil {
		return nil
	}
	i := b.Index()
	switch {
	case upgrade && u.h1Only != nil:
		return u.h1Only[i]
	case u.h2 != nil && u.h2[i].Load():
		return nil
	}
	return u.h1[i]
}

// useH2 sends b's requests through the HTTP/2 transport from now on.
func (u *upstream) useH2(b *balancer.Backend) { u.h2[b.Index()].Store(true) }

// close closes the idle backend connections; those in use close when their
// exchange ends.
func (u *upstream) close() {
	for _, pools := range [][]*h1.Pool{u.h1, u.h1Only} {
		for _, p := range pools {
			p.Close()
		}
	}
	if u.rt != nil {
		u.rt.CloseIdleConnections()
	}
}

// dialError marks a failure to connect: the request never left, so any
// request, whatever its method or body, may go to another backend.
type dialError struct{ err error }

func (e dialError) Error() string { return e.err.Error() }
func (e dialError) Unwrap() error { return e.err }

// trackedBody records whether the request body started to be read, after
// which it cannot be sent to another backend. Close is a no-op: a transport
// closes the body when an attempt fails, and a retry still needs it; the
// inbound body is the server's to close.
type trackedBody struct {
	io.ReadCloser
	read bool
}

func (t *trackedBody) Read(p []byte) (int, error) {
	t.read = true
	return t.ReadCloser.Read(p)
}

func (t *trackedBody) Close() error { return nil }
