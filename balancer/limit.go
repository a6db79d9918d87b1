package balancer

import (
	"context"
	"errors"
	"time"
)

var (
	// ErrNoBackend means no untried backend of the pool is usable.
	ErrNoBackend = errors.New("no usable backend")
	// ErrQueueTimeout means every usable backend stayed at max_conns for
	// the whole queue timeout.
	ErrQueueTimeout = errors.New("every usable backend at max_conns for the queue timeout")
)

// Acquire picks a backend as Pick does and counts a request in flight on it,
// never beyond max_conns; the caller must Release it. When the only backends
// left are full it waits up to the queue timeout for one to free up.
func (p *Pool) Acquire(ctx context.Context, tried Tried) (*Backend, error) {
	if b := p.tryAcquire(tried); b != nil {
		return b, nil
	}
	if !p.waitable(tried) {
		return nil, ErrNoBackend
	}
	return p.wait(ctx, tried)
}

func (p *Pool) tryAcquire(tried Tried) *Backend {
	// Losing a race for a backend's last slot means that backend is now
	// full and the next pick passes it over, so this loop is short.
	for range len(p.backends) + 1 {
		b := p.Pick(tried)
		if b == nil {
			return nil
		}
		if b.take() {
			return b
		}
	}
	return nil
}

// take counts a request in flight unless the backend is full.
func (b *Backend) take() bool {
	if b.maxConns == 0 {
		b.inflight.Add(1)
		return true
	}
	for {
		n := b.inflight.Load()
		if n >= b.maxConns {
			return false
		}
		if b.inflight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// waitable reports whether an untried backend that may take traffic is full,
// so that waiting for it can help.
func (p *Pool) waitable(tried Tried) bool {
	if p.opts.MaxConns == 0 {
		return false
	}
	anyHealth := p.opts.PanicMode && !p.anyUsable()
	for _, b := range p.backends {
		if !tried.Has(b) && (anyHealth || b.Usable()) && b.full() {
			return true
		}
	}
	return false
}

func (p *Pool) wait(ctx context.Context, tried Tried) (*Backend, error) {
	if p.opts.QueueTimeout <= 0 {
		return nil, ErrQueueTimeout
	}
	timer := time.NewTimer(p.opts.QueueTimeout)
	defer timer.Stop()
	// Registered before trying again, so that a Release after the failed
	// try sees a waiter and signals.
	q := p.waiters
	q.waiting.Add(1)
	defer q.waiting.Add(-1)
	for {
		if b := p.tryAcquire(tried); b != nil {
			if q.waiting.Load() > 1 {
				// Two releases may have raced into the one-slot channel;
				// pass the wake-up on so that no freed slot goes unnoticed.
				q.signal()
			}
			return b, nil
		}
		if !p.waitable(tried) {
			return nil, ErrNoBackend
		}
		select {
		case <-q.wake:
		case <-timer.C:
			return nil, ErrQueueTimeout
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// freed tells queued requests that a slot may be free.
func (q *queue) freed() {
	if q.waiting.Load() > 0 {
		q.signal()
	}
}

func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
