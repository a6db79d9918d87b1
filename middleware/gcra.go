package middleware

import (
	"encoding/binary"
	"hash/maphash"
	"math"
	"math/bits"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Key is what a rate limit counts by: a client address, or a string (a
// header's value, the user, the route).
type Key struct {
	IP netip.Addr
	S  string
}

// Decision is the outcome of one rate-limit check.
type Decision struct {
	Allowed bool
	// Remaining is how many more requests would be allowed right now.
	Remaining int
	// RetryAfter is, when refused, how long until a request is allowed.
	RetryAfter time.Duration
	// Reset is how long until the key is back to its full burst.
	Reset time.Duration
}

// Decider makes rate-limit decisions. The local one below keeps its state in
// this process; a shared one (Redis, for several instances) can stand in
// for it behind the same method.
type Decider interface {
	Allow(k Key, now time.Time) Decision
}

// gcra is the generic cell rate algorithm over a bounded, sharded table:
// per key it stores only the theoretical arrival time (TAT) of the next
// request. A key whose TAT has passed is at its full burst, which is exactly
// what a missing key is, so such keys can be dropped at any time without
// changing a decision: that is how idle keys are evicted. When a shard is
// full, a few sampled keys are examined and the one closest to a full burst
// (the smallest TAT: roughly the least recently used) makes room.
type gcra struct {
	interval  int64 // ns between requests at the steady rate
	tolerance int64 // burst × interval: how far ahead TAT may run
	epoch     time.Time
	byIP      bool // keys are addresses, else strings
	seed      maphash.Seed
	shift     uint8 // 64 - log2(len(shards))
	shards    []gcraShard
}

type gcraShard struct {
	mu        sync.Mutex
	ips       map[[16]byte]int64
	strs      map[string]int64
	limit     int   // keys kept at most
	nextSweep int64 // when to drop idle keys again
	_         [24]byte
}

const (
	maxShards     = 64
	evictSample   = 8
	sweepInterval = int64(time.Minute)
)

func newGCRA(perSecond float64, burst, maxKeys int, byIP bool, epoch time.Time) *gcra {
	interval := max(int64(math.Round(float64(time.Second)/perSecond)), 1)
	n := 1
	for n < maxShards && n*1024 <= maxKeys {
		n *= 2
	}
	g := &gcra{
		interval:  interval,
		tolerance: satMul(interval, int64(burst)),
		epoch:     epoch,
		byIP:      byIP,
		seed:      maphash.MakeSeed(),
		shift:     uint8(64 - bits.TrailingZeros(uint(n))),
		shards:    make([]gcraShard, n),
	}
	per := max(maxKeys/n, 1) // rounded down: max_keys is a hard cap
	for i := range g.shards {
		g.shards[i].limit = per
		if byIP {
			g.shards[i].ips = map[[16]byte]int64{}
		} else {
			g.shards[i].strs = map[string]int64{}
		}
	}
	return g
}

func satMul(a, b int64) int64 {
	if b != 0 && a > math.MaxInt64/b {
		return math.MaxInt64 / 4
	}
	return a * b
}

// Allow decides one request and records it when allowed.
func (g *gcra) Allow(k Key, now time.Time) Decision {
	t := int64(now.Sub(g.epoch))
	var ip [16]byte
	var h uint64
	if g.byIP {
		ip = k.IP.As16()
		h = (binary.LittleEndian.Uint64(ip[:8]) ^ binary.LittleEndian.Uint64(ip[8:])) * 0x9E3779B97F4A7C15
	} else {
		h = maphash.String(g.seed, k.S)
	}
	s := &g.shards[h>>g.shift] // a shift by 64 (one shard) gives 0

	s.mu.Lock()
	if t >= s.nextSweep {
		s.sweep(t)
		s.nextSweep = t + sweepInterval
	}
	var tat int64
	var found bool
	if g.byIP {
		tat, found = s.ips[ip]
	} else {
		tat, found = s.strs[k.S]
	}
	next := max(tat, t) + g.interval
	if next-t > g.tolerance {
		s.mu.Unlock()
		return Decision{RetryAfter: time.Duration(next - g.tolerance - t), Reset: time.Duration(max(tat, t) - t)}
	}
	if !found && s.len() >= s.limit {
		s.evict(t)
	}
	if g.byIP {
		s.ips[ip] = next
	} else if found {
		s.strs[k.S] = next
	} else {
		// A new key is copied: the string may live in the request's memory.
		s.strs[strings.Clone(k.S)] = next
	}
	s.mu.Unlock()
	return Decision{Allowed: true, Remaining: int((g.tolerance - (next - t)) / g.interval), Reset: time.Duration(next - t)}
}

func (s *gcraShard) len() int {
	if s.ips != nil {
		return len(s.ips)
	}
	return len(s.strs)
}

// sweep drops every key at its full burst.
func (s *gcraShard) sweep(now int64) {
	for k, tat := range s.ips {
		if tat <= now {
			delete(s.ips, k)
		}
	}
	for k, tat := range s.strs {
		if tat <= now {
			delete(s.strs, k)
		}
	}
}

// evict makes room for one key: idle keys among a sample go, or else the
// sampled key with the earliest TAT. Map iteration starts at a random
// place, which makes the sample.
func (s *gcraShard) evict(now int64) {
	n, oldest := 0, int64(math.MaxInt64)
	var oldIP [16]byte
	var oldStr string
	freed := false
	for k, tat := range s.ips {
		if tat <= now {
			delete(s.ips, k)
			freed = true
		} else if tat < oldest {
			oldest, oldIP = tat, k
		}
		if n++; n == evictSample {
			break
		}
	}
	for k, tat := range s.strs {
		if tat <= now {
			delete(s.strs, k)
			freed = true
		} else if tat < oldest {
			oldest, oldStr = tat, k
		}
		if n++; n == evictSample {
			break
		}
	}
	if freed || oldest == math.MaxInt64 {
		return
	}
	if s.ips != nil {
		delete(s.ips, oldIP)
	} else {
		delete(s.strs, oldStr)
	}
}

// keys counts the keys held, for tests and measurements.
func (g *gcra) keys() int {
	n := 0
	for i := range g.shards {
		s := &g.shards[i]
		s.mu.Lock()
		n += s.len()
		s.mu.Unlock()
	}
	return n
}
