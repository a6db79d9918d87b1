// Package health runs active health checks. Each backend of a checked pool
// is probed on its own schedule, and the verdict goes into the backend's
// state in balancer, which the policies read; passive detection lives in
// balancer itself, fed by the proxy. cmd starts one Group, updates it with
// each reloaded configuration's pools and stops it when the process ends.
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
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/portico/portico/balancer"
	"github.com/portico/portico/config"
)

// Checker probes the backends of one pool. A reload hands it the pool that
// replaces its own (follow): backends that stay keep their probes, streaks
// and schedule, new ones start being probed, removed ones stop.
type Checker struct {
	cfg       *config.Health
	log       *slog.Logger
	transport *http.Transport
	probers   map[string]*prober // by backend URL
}

// prober probes one backend until cancelled.
type prober struct {
	// The backend object of the pool in service, which a reload replaces by
	// its successor: state changes then use the new pool's settings.
	backend atomic.Pointer[balancer.Backend]
	cancel  context.CancelFunc
	done    chan struct{}
}

// maxBody is how much of a probe's response is searched for expect_body.
const maxBody = 64 << 10

// start begins probing every backend of pool as cfg, already checked,
// says. Stop ends it.
func start(pool *balancer.Pool, cfg *config.Health, log *slog.Logger) *Checker {
	timeout := cfg.Timeout.Duration
	c := &Checker{
		cfg: cfg,
		log: log.With("pool", pool.Name()),
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
		probers: map[string]*prober{},
	}
	c.follow(pool)
	return c
}

func checkSettings(pool *balancer.Pool, cfg *config.Health) error {
	switch {
	case pool == nil || cfg == nil:
		return errors.New("health: needs a pool and its health settings")
	case cfg.Interval.Duration <= 0 || cfg.Timeout.Duration <= 0:
		return fmt.Errorf("health: pool %q: interval and timeout must be above zero", pool.Name())
	case cfg.Rise < 1 || cfg.Fall < 1:
		return fmt.Errorf("health: pool %q: rise and fall must be at least 1", pool.Name())
	case len(cfg.Statuses) == 0 || cfg.Method == "" || !strings.HasPrefix(cfg.Path, "/"):
		return fmt.Errorf("health: pool %q: settings not validated (statuses, method, path)", pool.Name())
	}
	return nil
}

// follow makes the checker probe pool's backends: those it probes already
// go on where they are, now writing to pool's backend objects.
func (c *Checker) follow(pool *balancer.Pool) {
	keep := make(map[string]bool, len(pool.Backends()))
	for _, b := range pool.Backends() {
		key := b.URL().String()
		keep[key] = true
		if p, ok := c.probers[key]; ok {
			p.backend.Store(b)
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		p := &prober{cancel: cancel, done: make(chan struct{})}
		p.backend.Store(b)
		c.probers[key] = p
		target := key + c.cfg.Path
		go func() {
			defer close(p.done)
			c.run(ctx, p, target)
		}()
	}
	for key, p := range c.probers {
		if !keep[key] {
			p.stop()
			delete(c.probers, key)
		}
	}
}

func (p *prober) stop() {
	p.cancel()
	<-p.done
}

// Stop ends all probes, including any in flight, and waits for them.
func (c *Checker) Stop() {
	for _, p := range c.probers {
		p.cancel()
	}
	for _, p := range c.probers {
		<-p.done
	}
	c.transport.CloseIdleConnections()
}

// streak is one backend's run of consecutive results.
type streak struct {
	passes, fails int
	probed        bool
	whileEjected  int // consecutive passes while passive detection has it out
}

func (c *Checker) run(ctx context.Context, p *prober, target string) {
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
		c.record(p.backend.Load(), &s, start, ok, detail)
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

// Group is the checkers of the pools in service, carried across reloads.
type Group struct {
	log      *slog.Logger
	checkers map[string]*Checker // by pool name
}

// StartAll starts a checker for every pool whose configuration has a
// [health] table. pools and cfgs come from the same configuration.
func StartAll(pools []*balancer.Pool, cfgs map[string]*config.Pool, log *slog.Logger) (*Group, error) {
	g := &Group{log: log, checkers: map[string]*Checker{}}
	return g, g.Update(pools, cfgs)
}

// Update makes the group check the pools of a reloaded configuration. A
// pool whose health settings did not change keeps its checker, which
// follows the new pool's backends; a pool whose settings changed gets a new
// one; checkers of pools that lost their checks or left stop, and a pool
// that lost its checks no longer has backends held down by their last
// verdict. On an error nothing has changed. Update and Stop are not safe
// for concurrent use.
func (g *Group) Update(pools []*balancer.Pool, cfgs map[string]*config.Pool) error {
	for _, p := range pools {
		pc, ok := cfgs[p.Name()]
		if !ok {
			return fmt.Errorf("health: no configuration for pool %q", p.Name())
		}
		if pc.Health != nil {
			if err := checkSettings(p, pc.Health); err != nil {
				return err
			}
		}
	}
	keep := map[string]bool{}
	var unchecked []*balancer.Pool
	for _, p := range pools {
		h := cfgs[p.Name()].Health
		if h == nil {
			unchecked = append(unchecked, p)
			continue
		}
		keep[p.Name()] = true
		c := g.checkers[p.Name()]
		if c != nil && reflect.DeepEqual(c.cfg, h) {
			c.follow(p)
			continue
		}
		if c != nil {
			c.Stop()
		}
		g.checkers[p.Name()] = start(p, h, g.log)
	}
	for name, c := range g.checkers {
		if !keep[name] {
			c.Stop()
			delete(g.checkers, name)
		}
	}
	// Once their probes have stopped: nothing would ever bring back a
	// backend that checks this reload removed had taken down.
	for _, p := range unchecked {
		for _, b := range p.Backends() {
			b.Unchecked()
		}
	}
	return nil
}

// Stop stops every checker of the group.
func (g *Group) Stop() {
	for _, c := range g.checkers {
		c.Stop()
	}
}
