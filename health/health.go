// Package health runs active health checks. Each backend of a checked pool
// is probed on its own schedule, and the verdict goes into the backend's
// state in balancer, which the policies read; passive detection lives in
// balancer itself, fed by the proxy. cmd starts a Group per snapshot and
// stops it when the snapshot is replaced or the process ends.
package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/portico/portico/balancer"
	"github.com/portico/portico/config"
)

// Checker probes the backends of one pool.
type Checker struct {
	pool      *balancer.Pool
	cfg       *config.Health
	log       *slog.Logger
	transport *http.Transport
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// maxBody is how much of a probe's response is searched for expect_body.
const maxBody = 64 << 10

// Start begins probing every backend of pool as cfg says. Stop ends it.
func Start(pool *balancer.Pool, cfg *config.Health, log *slog.Logger) (*Checker, error) {
	switch {
	case pool == nil || cfg == nil:
		return nil, errors.New("health: needs a pool and its health settings")
	case cfg.Interval.Duration <= 0 || cfg.Timeout.Duration <= 0:
		return nil, fmt.Errorf("health: pool %q: interval and timeout must be above zero", pool.Name())
	case cfg.Rise < 1 || cfg.Fall < 1:
		return nil, fmt.Errorf("health: pool %q: rise and fall must be at least 1", pool.Name())
	case len(cfg.Statuses) == 0 || cfg.Method == "" || !strings.HasPrefix(cfg.Path, "/"):
		return nil, fmt.Errorf("health: pool %q: settings not validated (statuses, method, path)", pool.Name())
	}
	timeout := cfg.Timeout.Duration
	c := &Checker{
		pool: pool,
		cfg:  cfg,
		log:  log.With("pool", pool.Name()),
		// Probes have their own transport without keep-alive: a stuck probe
		// holds no connection that traffic needs, and each probe tests that
		// a new connection can be made, as a client's would.
		transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            (&net.Dialer{Timeout: timeout}).DialContext,
			DisableKeepAlives:      true,
			DisableCompression:     true,
			ResponseHeaderTimeout:  timeout,
			MaxResponseHeaderBytes: maxBody,
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	for _, b := range pool.Backends() {
		target := b.URL().String() + cfg.Path
		c.wg.Go(func() { c.run(ctx, b, target) })
	}
	return c, nil
}

// Stop ends all probes, including any in flight, and waits for them.
func (c *Checker) Stop() {
	c.cancel()
	c.wg.Wait()
	c.transport.CloseIdleConnections()
}

// streak is one backend's run of consecutive results.
type streak struct {
	passes, fails int
	probed        bool
	whileEjected  int // consecutive passes while passive detection has it out
}

func (c *Checker) run(ctx context.Context, b *balancer.Backend, target string) {
	interval := c.cfg.Interval.Duration
	// The first probe comes at a random point of the first interval, so
	// that the backends of a pool, and pools started together, spread out.
	due := time.Now().Add(rand.N(interval))
	timer := time.NewTimer(time.Until(due))
	defer timer.Stop()
	var s streak
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		start := time.Now()
		ok, detail := c.probe(ctx, target)
		if ctx.Err() != nil {
			return
		}
		c.record(b, &s, start, ok, detail)
		// Jitter only shortens the period, by up to a fifth, so that probes
		// do not fall into step and a verdict never takes longer than
		// fall × interval (+ timeout) or rise × interval. Periods count from
		// when probes were due, so a late timer does not push the rest back.
		due = due.Add(interval - rand.N(interval/5+1))
		if now := time.Now(); due.Before(now) {
			due = now
		}
		timer.Reset(time.Until(due))
	}
}

func (c *Checker) record(b *balancer.Backend, s *streak, at time.Time, ok bool, detail string) {
	first := !s.probed
	s.probed = true
	if ok {
		s.passes, s.fails = s.passes+1, 0
	} else {
		s.passes, s.fails = 0, s.fails+1
	}
	b.RecordCheck(balancer.Check{Time: at, OK: ok, Detail: detail, Passes: s.passes, Fails: s.fails})

	host := b.URL().Host
	switch {
	// A backend starts usable, so that a new pool takes traffic at once;
	// the first probe that fails takes it out without waiting for fall.
	case !ok && b.Healthy() && (first || s.fails >= c.cfg.Fall):
		b.SetUsable(false)
		c.log.Warn("backend down", "backend", host, "old", "up", "new", "down", "reason", detail,
			"consecutive_failures", s.fails)
	case ok && !b.Healthy() && s.passes >= c.cfg.Rise:
		b.SetUsable(true)
		c.log.Info("backend up", "backend", host, "old", "down", "new", "up", "reason", detail,
			"consecutive_passes", s.passes)
	}

	// Passes made while the backend is ejected vouch for it: rise of them
	// bring it back before its fail_timeout ends.
	if !ok || !b.Ejected() {
		s.whileEjected = 0
		return
	}
	if s.whileEjected++; s.whileEjected >= c.cfg.Rise {
		s.whileEjected = 0
		b.Readmit(fmt.Sprintf("%d active checks passed", c.cfg.Rise))
	}
}

// probe sends one request and says whether the answer is what cfg expects,
// and why not. It never outlives the timeout.
func (c *Checker) probe(ctx context.Context, target string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout.Duration)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, c.cfg.Method, target, nil)
	if err != nil {
		return false, err.Error()
	}
	if c.cfg.Host != "" {
		req.Host = c.cfg.Host
	}
	req.Header.Set("User-Agent", "portico-health")
	res, err := c.transport.RoundTrip(req)
	if err != nil {
		return false, c.describe(err)
	}
	defer res.Body.Close()
	if !c.cfg.Expects(res.StatusCode) {
		return false, fmt.Sprintf("status %d, want %s", res.StatusCode, c.cfg.ExpectStatus)
	}
	if c.cfg.ExpectBody != "" {
		body, err := io.ReadAll(io.LimitReader(res.Body, maxBody))
		if err != nil {
			return false, c.describe(err)
		}
		if !strings.Contains(string(body), c.cfg.ExpectBody) {
			return false, fmt.Sprintf("status %d, body lacks %q", res.StatusCode, c.cfg.ExpectBody)
		}
	}
	return true, fmt.Sprintf("status %d", res.StatusCode)
}

// describe names a probe failure the way an operator reads it in the log.
func (c *Checker) describe(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout after " + c.cfg.Timeout.Duration.String()
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	}
	return err.Error()
}

// Group is the checkers of one snapshot's pools.
type Group []*Checker

// StartAll starts a checker for every pool whose configuration has a
// [health] table. pools and cfgs come from the same configuration.
func StartAll(pools []*balancer.Pool, cfgs map[string]*config.Pool, log *slog.Logger) (Group, error) {
	var g Group
	for _, p := range pools {
		pc, ok := cfgs[p.Name()]
		if !ok {
			g.Stop()
			return nil, fmt.Errorf("health: no configuration for pool %q", p.Name())
		}
		if pc.Health == nil {
			continue
		}
		c, err := Start(p, pc.Health, log)
		if err != nil {
			g.Stop()
			return nil, err
		}
		g = append(g, c)
	}
	return g, nil
}

// Stop stops every checker of the group.
func (g Group) Stop() {
	for _, c := range g {
		c.Stop()
	}
}
