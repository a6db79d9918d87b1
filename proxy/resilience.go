package proxy

import (
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/portico/portico/balancer"
	"github.com/portico/portico/config"
	"github.com/portico/portico/reqinfo"
)

// poolOptions carries a pool's resilience settings over to balancer.
func poolOptions(pc *config.Pool, log *slog.Logger) balancer.Options {
	p := pc.Passive
	o := balancer.Options{
		Policy:       pc.Balance,
		MaxConns:     pc.MaxConns,
		QueueTimeout: pc.QueueTimeout.Duration,
		PanicMode:    pc.PanicMode,
		SlowStart:    pc.SlowStart.Duration,
		Decay:        pc.EWMADecay.Duration,
		Passive: balancer.Passive{
			MaxFails:          p.MaxFails,
			FailTimeout:       p.FailTimeout.Duration,
			MaxFailTimeout:    p.MaxFailTimeout.Duration,
			MaxEjectedPercent: p.MaxEjectedPercent,
			FailOn5xx:         p.FailOn5xx,
		},
		Log: log,
	}
	if h := pc.Health; h != nil {
		o.Recovery = time.Duration(h.Rise) * h.Interval.Duration
	}
	return o
}

// attempt sends req to b and tells b's state how it went: the latency for
// ewma, the success or failure for passive outlier detection; the time to
// the response headers goes into the request record and the metrics. An
// attempt the client abandoned, or failed by sending a broken, stalled or
// oversized body, says nothing about the backend.
func (u *upstream) attempt(req *http.Request, b *balancer.Backend, body *clientBody, info *reqinfo.Info) (*http.Response, error) {
	start := time.Now()
	res, err := u.conns[b.Index()].forRequest(req).RoundTrip(req)
	rtt := time.Since(start)
	info.BackendTTFB = rtt
	switch {
	case err == nil && res.StatusCode >= 500:
		b.Report(balancer.ServerError, rtt)
	case err == nil:
		b.Report(balancer.Success, rtt)
	case req.Context().Err() == nil && (body == nil || body.failed() == 0):
		b.Report(balancer.Failure, rtt)
	default:
		return res, err
	}
	status := 0
	if err == nil {
		status = res.StatusCode
	}
	u.stats.Attempt(b.Index(), status, rtt)
	return res, err
}

// unavailable is a pool having nothing to send a request to: a 503 that
// tells the client when to come back.
type unavailable struct {
	err        error
	retryAfter time.Duration
}

func (e *unavailable) Error() string { return e.err.Error() }
func (e *unavailable) Unwrap() error { return e.err }

func (u *upstream) unavailable(err error) error {
	switch {
	case errors.Is(err, balancer.ErrNoBackend):
		return &unavailable{err, u.pool.RetryAfter()}
	case errors.Is(err, balancer.ErrQueueTimeout):
		return &unavailable{err, time.Second}
	}
	return err
}

func setRetryAfter(h http.Header, err error) {
	var ua *unavailable
	if errors.As(err, &ua) {
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(ua.retryAfter.Seconds()))))
	}
}

// retryBudget limits retries to a share of a pool's requests, as Finagle's
// and Envoy's budgets do, so that retries cannot multiply the load on
// backends that are already failing: each request deposits that share of a
// token, each retry takes a whole one. The balance is capped, which bounds
// the burst a quiet pool can spend at once, and starts full, so that a new
// or quiet pool can still retry.
type retryBudget struct {
	balance atomic.Int64 // milli-tokens
	deposit int64        // milli-tokens per request
}

const (
	token     = 1000
	retryCap  = 10 * token // retries a full budget allows in a burst
	percentTo = token / 100
)

func newRetryBudget(percent int) *retryBudget {
	rb := &retryBudget{deposit: int64(percent) * percentTo}
	rb.balance.Store(retryCap)
	return rb
}

// request deposits one request's share.
func (rb *retryBudget) request() {
	// Read first: a full budget, the usual state, is then never written.
	if rb.balance.Load() >= retryCap {
		return
	}
	if v := rb.balance.Add(rb.deposit); v > retryCap {
		rb.balance.CompareAndSwap(v, retryCap)
	}
}

// retry withdraws a token for one retry, if there is one.
func (rb *retryBudget) retry() bool {
	for {
		v := rb.balance.Load()
		if v < token {
			return false
		}
		if rb.balance.CompareAndSwap(v, v-token) {
			return true
		}
	}
}
