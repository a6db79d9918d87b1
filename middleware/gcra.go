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
	seed      maphash.Seed
	ips       *table[[16]byte] // client_ip keys; nil for string keys
	strs      *table[string]
}

// table is a sharded map from key to TAT.
type table[K comparable] struct {
	shift  uint8 // 64 - log2(len(shards))
	shards []shard[K]
}

type shard[K comparable] struct {
	mu        sync.Mutex
	tats      map[K]int64
	limit     int   // keys kept at most
	nextSweep int64 // when to drop idle keys again
	_         [32]byte
}

const (
	maxShards     = 64
	evictSample   = 8
	sweepInterval = int64(time.Minute)
)

func newGCRA(perSecond float64, burst, maxKeys int, byIP bool, epoch time.Time) *gcra {
	interval := max(int64(math.Round(float64(time.Second)/perSecond)), 1)
	g := &gcra{
		interval:  interval,
		tolerance: satMul(interval, int64(burst)),
		epoch:     epoch,
		seed:      maphash.MakeSeed(),
	}
	if byIP {
		g.ips = newTable[[16]byte](maxKeys)
	} else {
		g.strs = newTable[string](maxKeys)
	}
	return g
}

func newTable[K comparable](maxKeys int) *table[K] {
	n := 1
	for n < maxShards && n*1024 <= maxKeys {
		n *= 2
	}
	t := &table[K]{shift: uint8(64 - bits.TrailingZeros(uint(n))), shards: make([]shard[K], n)}
	per := max(maxKeys/n, 1) // rounded down: max_keys is a hard cap
	for i := range t.shards {
		t.shards[i] = shard[K]{tats: map[K]int64{}, limit: per}
	}
	return t
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
	if g.ips != nil {
		ip := k.IP.As16()
		h := (binary.LittleEndian.Uint64(ip[:8]) ^ binary.LittleEndian.Uint64(ip[8:])) * 0x9E3779B97F4A7C15
		return g.ips.shard(h).allow(ip, ip, t, g)
	}
	// A new key is stored as a copy: the string may live in the request's memory.
	return g.strs.shard(maphash.String(g.seed, k.S)).allow(k.S, "", t, g)
}

func (t *table[K]) shard(h uint64) *shard[K] {
	return &t.shards[h>>t.shift] // a shift by 64 (one shard) gives 0
}

// allow is the decision within one shard. stored is the key as kept when
// new: the zero value asks for a copy of a string key.
func (s *shard[K]) allow(k, stored K, t int64, g *gcra) Decision {
	s.mu.Lock()
	if t >= s.nextSweep {
		s.sweep(t)
		s.nextSweep = t + sweepInterval
	}
	tat, found := s.tats[k]
	next := max(tat, t) + g.interval
	if next-t > g.tolerance {
		s.mu.Unlock()
		return Decision{RetryAfter: time.Duration(next - g.tolerance - t), Reset: time.Duration(max(tat, t) - t)}
	}
	if !found {
		if len(s.tats) >= s.limit {
			s.evict(t)
		}
		k = keep(k, stored)
	}
	s.tats[k] = next
	s.mu.Unlock()
	return Decision{Allowed: true, Remaining: int((g.tolerance - (next - t)) / g.interval), Reset: time.Duration(next - t)}
}

// keep returns the key to store: a copy of a string key, as is otherwise.
func keep[K comparable](k, stored K) K {
	if s, ok := any(k).(string); ok {
		return any(strings.Clone(s)).(K)
	}
	return stored
}

// sweep drops every key at its full burst.
func (s *shard[K]) sweep(now int64) {
	for k, tat := range s.tats {
		if tat <= now {
			delete(s.tats, k)
		}
	}
}

// evict makes room for one key: idle keys among a sample go, or else the
// sampled key with the earliest TAT. Map iteration starts at a random
// place, which makes the sample.
func (s *shard[K]) evict(now int64) {
	n, oldest, freed := 0, int64(math.MaxInt64), false
	var old K
	for k, tat := range s.tats {
		if tat <= now {
			delete(s.tats, k)
			freed = true
		} else if tat < oldest {
			oldest, old = tat, k
		}
		if n++; n == evictSample {
			break
		}
	}
	if !freed && oldest != math.MaxInt64 {
		delete(s.tats, old)
	}
}
