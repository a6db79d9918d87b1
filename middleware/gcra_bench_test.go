package middleware

import (
	"runtime"
	"strconv"
	"testing"
	"time"
)

// bytesPerKey measures the heap a full table of n keys takes, divided by n:
// the difference of the live heap (after a GC) with and without the table.
func bytesPerKey(n int, byIP bool) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	t0 := time.Unix(0, 0)
	g := newGCRA(1, 1, 2*n, byIP, t0) // room to spare: nothing evicted
	for i := range n {
		if byIP {
			g.Allow(Key{IP: ipN(i)}, t0)
		} else {
			// An API key or tenant ID of a typical length.
			g.Allow(Key{S: "tenant-" + strconv.Itoa(1_000_000+i)}, t0)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if g.keys() != n {
		panic("keys were evicted")
	}
	per := float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
	runtime.KeepAlive(g)
	return per
}

// TestRateLimitMemoryPerKey holds the bound: at most 128 bytes per
// key, measured on 100,000 keys.
func TestRateLimitMemoryPerKey(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 100,000 keys")
	}
	for _, byIP := range []bool{true, false} {
		per := bytesPerKey(100_000, byIP)
		t.Logf("byIP=%v: %.1f bytes per key", byIP, per)
		if per > 128 {
			t.Errorf("byIP=%v: %.1f bytes per key, want at most 128", byIP, per)
		}
	}
}

// BenchmarkRateLimitDecision is one decision under parallel load across
// 100,000 client addresses, at a rate that lets everything through (the
// state is written on every decision).
func BenchmarkRateLimitDecision(b *testing.B) {
	const n = 100_000
	g := newGCRA(1e6, 1000, n, true, time.Now())
	keys := make([]Key, n)
	for i := range keys {
		keys[i] = Key{IP: ipN(i)}
	}
	now := time.Now()
	for _, k := range keys {
		g.Allow(k, now)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(time.Now().UnixNano()) % n
		for pb.Next() {
			g.Allow(keys[i], now)
			if i++; i == n {
				i = 0
			}
		}
	})
}
