package h1

import (
	"context"
	"errors"
	"net/http"
	"os"
	"time"
)

// What a connection does around its handler: the background read that
// notices a client going away, and the read deadlines.
//
// A read deadline bounds a wait for a request (ReadHeaderTimeout from the
// connection's start or from a head's first byte, IdleTimeout between
// requests) or is a handler's (client_body_timeout, a drain). A wait's
// deadline is left in force when a request starts, since clearing it and
// setting the next one is two timer updates per request; it is cleared
// instead when it could cut the handler's work short: before the first
// read of a body, and when it passes during the background read, which
// then goes on.

const (
	waitNone uint8 = iota // a handler's deadline, or none
	waitHead              // the head must arrive by then
	waitIdle              // the next request must start by then
)

// watchDelay is how long a handler runs before the background read
// starts. Most requests end sooner and never start it: a goroutine, and a
// hand-over to the serving goroutine at the next request, were 4% of a
// small proxied request's cost. A client that leaves is noticed that
// much later.
const watchDelay = 5 * time.Millisecond

const (
	watchOff     int32 = iota
	watchArmed         // the timer runs; nothing reads yet
	watchReading       // backgroundRead runs, and ends with bgDone
)

// startBackgroundRead arms the read from the client while the handler
// runs, unless bytes of a next request are already buffered; the request
// is cancelled (c.ctx) when the client closes the connection meanwhile.
func (c *serverConn) startBackgroundRead() {
	cc := &c.conn
	if c.watch.Load() != watchOff || cc.r < cc.w {
		return
	}
	cc.r, cc.w = 0, 0
	c.bgAbort.Store(false)
	if c.watchTimer == nil {
		// Made stopped, so that a disarm never finds the state armed and
		// no timer to stop.
		c.watchTimer = time.AfterFunc(time.Hour, c.watchFire)
		c.watchTimer.Stop()
	}
	c.watch.Store(watchArmed)
	c.watchTimer.Reset(watchDelay)
}

// watchFire runs on the timer's goroutine, which becomes the background
// read unless the serving goroutine disarmed it first.
func (c *serverConn) watchFire() {
	if c.watch.CompareAndSwap(watchArmed, watchReading) {
		c.backgroundRead()
	}
}

// disarm stops an armed background read before it starts, and reports
// whether one runs instead, which the caller must then wait for (bgDone).
func (c *serverConn) disarm() bool {
	if c.watch.CompareAndSwap(watchArmed, watchOff) {
		c.watchTimer.Stop()
		return false
	}
	return c.watch.Load() == watchReading
}

func (c *serverConn) backgroundRead() {
	for {
		n, err := c.nc.Read(c.conn.buf[c.conn.w:])
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && c.staleDeadline() {
			continue
		}
		c.bgN, c.bgErr = n, err
		if n == 0 && !c.bgAbort.Load() {
			c.ctx.Cancel() // the client left
			c.clientGone()
		}
		c.bgDone <- struct{}{}
		return
	}
}

// staleDeadline clears a read deadline that passed while a handler ran and
// reports whether it did: the wait's, or one the handler set for its body,
// neither of which may end the background read. One set to stop the read
// (stopBackgroundRead) and one that passes while the connection waits for
// a request are not stale.
func (c *serverConn) staleDeadline() bool {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if c.bgAbort.Load() || c.waiting {
		return false
	}
	c.rd, c.wait = time.Time{}, waitNone
	_ = c.nc.SetReadDeadline(c.rd)
	return true
}

// stopBackgroundRead ends a background read, armed or in progress (a
// handler takes the connection over, or it ends), keeping what it read.
func (c *serverConn) stopBackgroundRead() {
	if !c.disarm() {
		return
	}
	c.bgAbort.Store(true)
	c.setReadDeadline(aLongTimeAgo)
	c.collectBackgroundRead()
	c.setReadDeadline(time.Time{})
}

// collectBackgroundRead waits for the background read to end and keeps
// what it read (bgN bytes, then bgErr).
func (c *serverConn) collectBackgroundRead() {
	<-c.bgDone
	c.watch.Store(watchOff)
	c.conn.w += c.bgN
}

// clientGone runs the function AfterClientGone registered, if any.
func (c *serverConn) clientGone() {
	c.goneMu.Lock()
	f := c.goneFn
	c.gone, c.goneFn = true, nil
	c.goneMu.Unlock()
	if f != nil {
		f()
	}
}

// afterClientGone is context.AfterFunc on the request's context, for the
// one function a proxy registers per request (abort the backend exchange
// when the client leaves), without its allocations: one function at a
// time, run on the background read's goroutine.
func (c *serverConn) afterClientGone(f func()) func() bool {
	c.goneMu.Lock()
	if c.gone || c.goneFn != nil {
		c.goneMu.Unlock()
		return context.AfterFunc(c.resp.req.Context(), f)
	}
	c.goneFn = f
	c.goneMu.Unlock()
	return c.stopGone
}

func (c *serverConn) unregisterGone() bool {
	c.goneMu.Lock()
	defer c.goneMu.Unlock()
	registered := c.goneFn != nil
	c.goneFn = nil
	return registered
}

// waitNext marks the connection idle, waiting for its next request within
// IdleTimeout. The deadline moves only when it is more than a little
// early: moving it is a timer update, and a busy connection serves
// requests far more often than the slack.
func (c *serverConn) waitNext() {
	c.state.Store(connIdle)
	c.srv.connState(c.nc, http.StateIdle)
	d := c.srv.cfg.IdleTimeout
	if d <= 0 {
		d = c.srv.cfg.ReadHeaderTimeout
	}
	now := monoNow()
	c.dmu.Lock()
	c.waiting = true
	if d > 0 && (c.wait != waitIdle || c.rd.Sub(now) < d-min(time.Second, d/4)) {
		c.rd, c.wait = now.Add(d), waitIdle
		_ = c.nc.SetReadDeadline(c.rd)
	} else if d <= 0 && !c.rd.IsZero() {
		c.rd, c.wait = time.Time{}, waitNone
		_ = c.nc.SetReadDeadline(c.rd)
	}
	c.dmu.Unlock()
}

// headArriving runs when a head's first bytes are in but not all of it:
// after an idle wait, the rest must come within ReadHeaderTimeout. On a
// connection's first request that deadline runs from its start already.
func (c *serverConn) headArriving() {
	c.dmu.Lock()
	idle := c.wait == waitIdle
	c.dmu.Unlock()
	if idle {
		c.setWaitDeadline(after(c.srv.cfg.ReadHeaderTimeout), waitHead)
	}
}

// handling marks the start of a request's handler: from now on a deadline
// that passes is not a wait's timeout. It moves no timer.
func (c *serverConn) handling() {
	c.dmu.Lock()
	c.waiting = false
	c.dmu.Unlock()
}

// bodyDeadline clears a wait's deadline before the handler first reads
// the body: a body read has no deadline but the handler's.
func (c *serverConn) bodyDeadline() {
	c.dmu.Lock()
	if c.wait != waitNone {
		c.rd, c.wait = time.Time{}, waitNone
		_ = c.nc.SetReadDeadline(c.rd)
	}
	c.dmu.Unlock()
}

// setWaitDeadline sets the deadline of a wait for a request.
func (c *serverConn) setWaitDeadline(t time.Time, wait uint8) {
	c.dmu.Lock()
	c.waiting, c.wait = true, wait
	if !t.Equal(c.rd) {
		c.rd = t
		_ = c.nc.SetReadDeadline(t)
	}
	c.dmu.Unlock()
}

// setReadDeadline sets a deadline of the handler's, or the server's own
// while it ends a request.
func (c *serverConn) setReadDeadline(t time.Time) {
	c.dmu.Lock()
	c.wait = waitNone
	if !t.Equal(c.rd) {
		c.rd = t
		_ = c.nc.SetReadDeadline(t)
	}
	c.dmu.Unlock()
}
