package balancer

import (
	"context"
	"testing"
	"time"
)

// A reload's pool is built from successors of the old pool's backends: they
// keep every piece of state, at the new weight and limits.
func TestSuccessorSharesStateAcrossPools(t *testing.T) {
	old := poolWith(t, 3, Options{Policy: EWMA, SlowStart: time.Hour, Passive: Passive{MaxFails: 1, FailTimeout: time.Hour, MaxEjectedPercent: 100}})
	a, b, c := old.Backends()[0], old.Backends()[1], old.Backends()[2]
	a.SetUsable(false)
	a.RecordCheck(Check{OK: false, Detail: "status 500", Fails: 1})
	fail(b, 1) // ejected
	c.SetUsable(false)
	c.SetUsable(true) // ramping
	c.Report(Success, 40*time.Millisecond)
	inflight, err := old.Acquire(context.Background(), Tried(0).Add(a).Add(b))
	if err != nil || inflight != c {
		t.Fatalf("acquire: %v %v, want c", inflight, err)
	}

	var next []*Backend
	for i, x := range old.Backends() {
		s, err := x.Successor(i + 2)
		if err != nil {
			t.Fatal(err)
		}
		next = append(next, s)
	}
	fresh := backends(t, 1)[0]
	p, err := old.Next(append(next, fresh), Options{Policy: EWMA, MaxConns: 5, SlowStart: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	na, nb, nc := p.Backends()[0], p.Backends()[1], p.Backends()[2]
	if p.Name() != old.Name() || na == a || na.URL() != a.URL() || na.Weight() != 2 || nc.Weight() != 4 {
		t.Errorf("next pool %q: successor %p of %p, url %v, weights %d %d", p.Name(), na, a, na.URL(), na.Weight(), nc.Weight())
	}
	if na.Healthy() || na.Usable() || na.State().LastCheck == nil || na.State().LastCheck.Detail != "status 500" {
		t.Errorf("down backend's successor: healthy %v usable %v last check %+v, want still down", na.Healthy(), na.Usable(), na.State().LastCheck)
	}
	if st := nb.State(); !st.Ejected || st.Ejections != 1 || nb.Usable() {
		t.Errorf("ejected backend's successor: %+v, want still ejected", st)
	}
	if st := nc.State(); st.Share >= 0.5 || st.InFlight != 1 || st.Latency < 30*time.Millisecond || st.MaxConns != 5 {
		t.Errorf("ramping backend's successor: %+v, want its ramp, in-flight request, latency and the new max_conns", st)
	}
	if st := fresh.State(); !st.Usable || st.Share != 1 || st.InFlight != 0 || st.LastCheck != nil {
		t.Errorf("new backend: %+v, want usable with a clean state", st)
	}

	// The request acquired on the old pool is counted off the successor.
	inflight.Release()
	if n := nc.InFlight(); n != 0 {
		t.Errorf("in flight after the old pool's request ended: %d, want 0", n)
	}
	// Both pools see what either learns.
	nb.Readmit("test")
	if b.Ejected() || !b.Usable() {
		t.Error("readmitting the successor left the old backend ejected")
	}
	// Picks on the new pool use its own backends, never the old pool's.
	for range 20 {
		if x := p.Pick(0); x == a || x == b || x == c {
			t.Fatalf("new pool picked a backend of the old pool")
		}
	}
}

// A request queued for max_conns on the new pool is woken by a request
// that finishes on the old pool.
func TestNextPoolSharesTheMaxConnsQueue(t *testing.T) {
	old := poolWith(t, 1, Options{MaxConns: 1, QueueTimeout: 5 * time.Second})
	held, err := old.Acquire(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := held.Successor(1)
	p, err := old.Next([]*Backend{s}, Options{MaxConns: 1, QueueTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		b, err := p.Acquire(context.Background(), 0)
		if err == nil {
			b.Release()
		}
		got <- err
	}()
	for p.waiters.waiting.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	held.Release()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("queued acquire: %v", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("woken after %v", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a release on the old pool did not wake the new pool's queue")
	}
}
