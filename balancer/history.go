package balancer

import (
	"sync"
	"time"
)

// Transition is one change of a backend's state: down and up by active
// checks, ejected and usable again by passive detection.
type Transition struct {
	Time     time.Time
	Backend  string // host:port
	From, To string // "up"/"down" or "usable"/"ejected"
	Reason   string
}

// historySize bounds the transitions a pool keeps: enough to see a flapping
// backend, small enough that a pool's state stays cheap to copy.
const historySize = 32

// transitions is a ring of a pool's latest transitions. They are rare (a
// probe verdict, an ejection), so a mutex costs nothing that matters.
type transitions struct {
	mu   sync.Mutex
	ring [historySize]Transition
	n    int // transitions recorded since start
}

func (b *Backend) transition(from, to, reason string) {
	if b.pool == nil { // not in a pool yet: nobody to show it to
		return
	}
	h := b.pool.history
	h.mu.Lock()
	h.ring[h.n%historySize] = Transition{Time: time.Now(), Backend: b.url.Host, From: from, To: to, Reason: reason}
	h.n++
	h.mu.Unlock()
}

// list returns the transitions kept, oldest first.
func (h *transitions) list() []Transition {
	h.mu.Lock()
	defer h.mu.Unlock()
	start := max(0, h.n-historySize)
	out := make([]Transition, 0, h.n-start)
	for i := start; i < h.n; i++ {
		out = append(out, h.ring[i%historySize])
	}
	return out
}
