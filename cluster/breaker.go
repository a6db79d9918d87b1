package cluster

import (
	"sync/atomic"
	"time"
)

// breaker stops rate-limit calls to Redis for breakFor after breakAfter
// consecutive failures, so that a Redis that is down costs requests
// nothing: they are decided at once by the fallback. When breakFor has
// passed, one call tries Redis; its success closes the breaker, its
// failure opens it again. It is lock-free: the request path reads two
// atomics when all is well.
type breaker struct {
	failures  atomic.Int32 // consecutive
	openUntil atomic.Int64 // unix ns; 0 while closed
	probing   atomic.Bool  // a call is trying Redis while open
}

const (
	breakAfter = 5
	breakFor   = 3 * time.Second
)

// allow reports whether a call may go to Redis now.
func (b *breaker) allow(now int64) bool {
	until := b.openUntil.Load()
	return until == 0 || (now >= until && b.probing.CompareAndSwap(false, true))
}

// success records a call that Redis answered; it reports whether that
// closed the breaker.
func (b *breaker) success() bool {
	if b.failures.Load() != 0 {
		b.failures.Store(0)
	}
	if b.openUntil.Load() == 0 {
		return false
	}
	b.openUntil.Store(0)
	b.probing.Store(false)
	return true
}

// failure records a failed call; it reports whether that opened the
// breaker.
func (b *breaker) failure(now int64) bool {
	if b.openUntil.Load() != 0 { // the probe failed: wait again
		b.openUntil.Store(now + int64(breakFor))
		b.probing.Store(false)
		return false
	}
	return b.failures.Add(1) >= breakAfter && b.openUntil.CompareAndSwap(0, now+int64(breakFor))
}
