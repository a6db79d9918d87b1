package balancer

import (
	"fmt"
	"math"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func backends(t testing.TB, weights ...int) []*Backend {
	t.Helper()
	bs := make([]*Backend, len(weights))
	for i, w := range weights {
		b, err := NewBackend(&url.URL{Scheme: "http", Host: fmt.Sprintf("10.0.0.%d:80", i+1)}, w)
		if err != nil {
			t.Fatal(err)
		}
		bs[i] = b
	}
	return bs
}

func pool(t testing.TB, policy string, weights ...int) *Pool {
	t.Helper()
	p, err := NewPool("test", backends(t, weights...), Options{Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// letters names backends A, B, C... by index, to read pick sequences.
func letters(p *Pool, n int) string {
	var sb strings.Builder
	for range n {
		sb.WriteByte(byte('A' + p.Pick(0).index))
	}
	return sb.String()
}

func TestNewPoolRejects(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    Options
		weights []int
	}{
		{"no backends", Options{}, nil},
		{"unknown policy", Options{Policy: "random"}, []int{1}},
		{"negative max conns", Options{MaxConns: -1}, []int{1}},
		{"negative slow start", Options{SlowStart: -time.Second}, []int{1}},
		{"max fails without fail timeout", Options{Passive: Passive{MaxFails: 1}}, []int{1}},
		{"max ejected percent over 100", Options{Passive: Passive{MaxEjectedPercent: 101}}, []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewPool("p", backends(t, tc.weights...), tc.opts); err == nil {
				t.Fatal("NewPool succeeded, want an error")
			}
		})
	}
	if _, err := NewBackend(&url.URL{Host: "a:1"}, 0); err == nil {
		t.Error("NewBackend accepted weight 0")
	}
	if _, err := NewBackend(nil, 1); err == nil {
		t.Error("NewBackend accepted a nil URL")
	}
}

// Smooth weighted round robin interleaves: 3:1 is A A B A over a cycle
// (never A A A B bursts), and 5:1:1 spreads B and C apart.
func TestRoundRobinIsSmooth(t *testing.T) {
	for _, tc := range []struct {
		weights []int
		want    string
	}{
		{[]int{1, 1}, "ABABAB"},
		{[]int{3, 1}, "AABAAABA"},
		{[]int{5, 1, 1}, "AABACAA"},
		{[]int{2, 4, 6}, "CBACBC"}, // reduced by the gcd to 1:2:3
	} {
		t.Run(fmt.Sprint(tc.weights), func(t *testing.T) {
			if got := letters(pool(t, RoundRobin, tc.weights...), len(tc.want)); got != tc.want {
				t.Errorf("picks = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestWeightsHonouredWithinOnePercent(t *testing.T) {
	for _, policy := range []string{RoundRobin, LeastConn} {
		t.Run(policy, func(t *testing.T) {
			weights := []int{5, 3, 2}
			p := pool(t, policy, weights...)
			counts := make([]int, len(weights))
			const picks = 10000
			for range picks {
				b := p.Pick(0)
				counts[b.index]++
				if policy == LeastConn {
					// Hold each request briefly, as real ones are, so load differs.
					b.take()
					defer b.Release()
				}
			}
			for i, w := range weights {
				want := float64(picks) * float64(w) / 10
				if math.Abs(float64(counts[i])-want) > picks*0.01 {
					t.Errorf("backend %d (weight %d): %d picks, want %.0f ±1%%", i, w, counts[i], want)
				}
			}
		})
	}
}

func TestPickSkipsUnusableAndTried(t *testing.T) {
	for _, policy := range []string{RoundRobin, LeastConn, EWMA} {
		t.Run(policy, func(t *testing.T) {
			p := pool(t, policy, 1, 1, 1)
			bs := p.Backends()
			bs[1].SetUsable(false)
			for range 30 {
				if b := p.Pick(0); b == bs[1] {
					t.Fatal("picked an unusable backend")
				}
			}
			tried := Tried(0).Add(bs[0])
			for range 30 {
				if b := p.Pick(tried); b != bs[2] {
					t.Fatalf("picked %v, want the only untried usable backend", b.URL())
				}
			}
			if b := p.Pick(tried.Add(bs[2])); b != nil {
				t.Fatalf("picked %v with every backend tried or unusable, want nil", b.URL())
			}
			bs[1].SetUsable(true)
			if b := p.Pick(tried.Add(bs[2])); b != bs[1] {
				t.Fatal("a backend made usable again is not picked")
			}
		})
	}
}

func TestSetUsableReportsChange(t *testing.T) {
	b := backends(t, 1)[0]
	if !b.Usable() {
		t.Fatal("a new backend must be usable")
	}
	if b.SetUsable(true) {
		t.Error("SetUsable(true) on a usable backend reported a change")
	}
	if !b.SetUsable(false) || b.Usable() {
		t.Error("SetUsable(false) did not take effect or reported no change")
	}
	if !b.SetUsable(true) || !b.Usable() {
		t.Error("SetUsable(true) did not take effect or reported no change")
	}
}

// While backend A holds slow requests, least_conn sends new ones to idle B.
func TestLeastConnPrefersIdleBackend(t *testing.T) {
	p := pool(t, LeastConn, 1, 1)
	a, b := p.Backends()[0], p.Backends()[1]
	for range 5 {
		a.take()
	}
	for i := range 20 {
		got := p.Pick(0)
		if got != b {
			t.Fatalf("pick %d went to the busy backend", i)
		}
		got.take()
		defer got.Release()
		if b.InFlight() >= a.InFlight() {
			break // now equal load: either is right
		}
	}
}

// Equal load: least_conn takes backends in turn rather than always the first.
func TestLeastConnBreaksTiesInTurn(t *testing.T) {
	if got := letters(pool(t, LeastConn, 1, 1, 1), 6); got != "ABCABC" {
		t.Errorf("picks = %s, want ABCABC", got)
	}
}

func TestPickIsSafeConcurrently(t *testing.T) {
	for _, policy := range []string{RoundRobin, LeastConn, EWMA} {
		t.Run(policy, func(t *testing.T) {
			p := pool(t, policy, 2, 1)
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for range 1000 {
						b := p.Pick(0)
						b.take()
						b.Release()
					}
				})
			}
			wg.Wait()
			for _, b := range p.Backends() {
				if b.InFlight() != 0 {
					t.Errorf("%v: in flight %d after all released", b.URL(), b.InFlight())
				}
			}
		})
	}
}

func BenchmarkPick(b *testing.B) {
	for _, policy := range []string{RoundRobin, LeastConn, EWMA} {
		p := pool(b, policy, 3, 1, 1, 2)
		b.Run(policy, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Pick(0)
			}
		})
		b.Run(policy+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					be := p.Pick(0)
					be.take()
					be.Release()
				}
			})
		})
	}
}
