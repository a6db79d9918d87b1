package balancer

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// poolWith builds a pool of n weight-1 backends with opts.
func poolWith(t testing.TB, n int, opts Options) *Pool {
	t.Helper()
	weights := make([]int, n)
	for i := range weights {
		weights[i] = 1
	}
	p, err := NewPool("test", backends(t, weights...), opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func fail(b *Backend, times int) {
	for range times {
		b.Report(Failure, time.Millisecond)
	}
}

func TestPanicModeUsesAllBackendsOnlyWhenNoneIsUsable(t *testing.T) {
	for _, tc := range []struct {
		name      string
		panicMode bool
		usable    int // of three, from the first
		want      string
	}{
		{"off, none usable", false, 0, "none"},
		{"on, none usable", true, 0, "any"},
		{"on, one usable", true, 1, "first"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := poolWith(t, 3, Options{PanicMode: tc.panicMode})
			for i, b := range p.Backends() {
				b.SetUsable(i < tc.usable)
			}
			for range 10 {
				got := p.Pick(0)
				switch {
				case tc.want == "none" && got != nil:
					t.Fatalf("picked %v, want none", got.URL())
				case tc.want == "any" && got == nil:
					t.Fatal("picked none, want any backend in panic mode")
				case tc.want == "first" && got != p.Backends()[0]:
					t.Fatalf("picked %v, want the one usable backend", got)
				}
			}
			if tc.want == "any" {
				all := Tried(0)
				for _, b := range p.Backends() {
					all = all.Add(b)
				}
				if got := p.Pick(all); got != nil {
					t.Errorf("panic mode picked tried backend %v", got.URL())
				}
			}
		})
	}
}

func TestPassiveEjectsAfterMaxFailsWithBackoffAndCap(t *testing.T) {
	const base = time.Minute
	p := poolWith(t, 3, Options{Passive: Passive{MaxFails: 3, FailTimeout: base, MaxFailTimeout: 3 * base, MaxEjectedPercent: 50}})
	b := p.Backends()[0]

	fail(b, 2)
	b.Report(Success, time.Millisecond)
	fail(b, 2)
	if !b.Usable() {
		t.Fatal("ejected after 2+2 failures split by a success, want max_fails consecutive")
	}
	// Each ejection since the last success doubles, up to the cap.
	for i, want := range []time.Duration{base, 2 * base, 3 * base, 3 * base} {
		fail(b, 3)
		s := b.State()
		if b.Usable() || !s.Ejected || s.Ejections != int64(i+1) {
			t.Fatalf("ejection %d: usable %v, state %+v; want ejected", i+1, b.Usable(), s)
		}
		if s.EjectedFor > want || s.EjectedFor < want-time.Second {
			t.Errorf("ejection %d lasts %v, want %v", i+1, s.EjectedFor, want)
		}
		if !b.Readmit("test") || !b.Usable() {
			t.Fatalf("Readmit did not end ejection %d", i+1)
		}
	}
	b.Report(Success, time.Millisecond)
	fail(b, 3)
	if got := b.State().EjectedFor; got > base {
		t.Errorf("after a success the ejection lasts %v, want the base %v again", got, base)
	}
}

func TestEjectionEndsAfterFailTimeout(t *testing.T) {
	const timeout = 50 * time.Millisecond
	p := poolWith(t, 2, Options{Passive: Passive{MaxFails: 1, FailTimeout: timeout, MaxEjectedPercent: 50}})
	b := p.Backends()[0]
	start := time.Now()
	fail(b, 1)
	for !b.Usable() {
		if time.Since(start) > 5*time.Second {
			t.Fatal("ejection never ended")
		}
		time.Sleep(time.Millisecond)
	}
	if took := time.Since(start); took < timeout {
		t.Errorf("readmitted after %v, before fail_timeout %v", took, timeout)
	}
}

func TestServerErrorsFailOnlyWithFailOn5xx(t *testing.T) {
	for _, on := range []bool{false, true} {
		p := poolWith(t, 2, Options{Passive: Passive{MaxFails: 2, FailTimeout: time.Minute, MaxEjectedPercent: 50, FailOn5xx: on}})
		b := p.Backends()[0]
		b.Report(ServerError, time.Millisecond)
		b.Report(ServerError, time.Millisecond)
		if b.Ejected() != on {
			t.Errorf("fail_on_5xx %v: ejected = %v after two 5xx", on, b.Ejected())
		}
	}
}

func TestMaxEjectedPercentCapsEjections(t *testing.T) {
	for _, tc := range []struct {
		name       string
		backends   int
		percent    int
		activeDown int
		want       int // ejected after every backend that is up fails
	}{
		{"half of four", 4, 50, 0, 2},
		{"half of three", 3, 50, 0, 1},
		{"zero percent", 4, 0, 0, 0},
		{"a single backend", 1, 50, 0, 0},
		{"all of them", 3, 100, 0, 3},
		{"actively down ones count", 4, 50, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := poolWith(t, tc.backends, Options{Passive: Passive{MaxFails: 1, FailTimeout: time.Minute, MaxEjectedPercent: tc.percent}})
			for _, b := range p.Backends()[:tc.activeDown] {
				b.SetUsable(false)
			}
			for _, b := range p.Backends()[tc.activeDown:] {
				fail(b, 1)
			}
			ejected := 0
			for _, b := range p.Backends() {
				if b.Ejected() {
					ejected++
				}
			}
			if ejected != tc.want {
				t.Errorf("%d ejected, want %d", ejected, tc.want)
			}
		})
	}
}

// pickShare returns the share of n picks that went to b, each pick held in
// flight until the end, as concurrent requests are.
func pickShare(p *Pool, b *Backend, n int) float64 {
	got := 0
	var held []*Backend
	for range n {
		x := p.Pick(0)
		x.take()
		held = append(held, x)
		if x == b {
			got++
		}
	}
	for _, x := range held {
		x.Release()
	}
	return float64(got) / float64(n)
}

func TestSlowStartRampsShareUp(t *testing.T) {
	const ramp = 300 * time.Millisecond
	for _, policy := range []string{RoundRobin, LeastConn, EWMA} {
		t.Run(policy, func(t *testing.T) {
			p := poolWith(t, 2, Options{Policy: policy, SlowStart: ramp})
			b := p.Backends()[1]
			b.SetUsable(false)
			b.SetUsable(true)
			start := time.Now()
			early := pickShare(p, b, 400)
			time.Sleep(ramp/2 - time.Since(start))
			mid := pickShare(p, b, 400)
			time.Sleep(ramp - time.Since(start))
			late := pickShare(p, b, 400)
			t.Logf("share of the returning backend: %.0f%% at once, %.0f%% half way, %.0f%% after slow_start", early*100, mid*100, late*100)
			if early > 0.15 || mid <= early || late <= mid || late < 0.4 || late > 0.6 {
				t.Errorf("shares %.2f, %.2f, %.2f: want a ramp from under 0.15 up to about 0.5", early, mid, late)
			}
		})
	}
}

func TestMaxConnsQueuesThenTimesOut(t *testing.T) {
	const queue = 150 * time.Millisecond
	p := poolWith(t, 2, Options{MaxConns: 1, QueueTimeout: queue})
	ctx := context.Background()
	a, err1 := p.Acquire(ctx, 0)
	b, err2 := p.Acquire(ctx, 0)
	if err1 != nil || err2 != nil || a == b {
		t.Fatalf("two acquires: %v %v, %v %v; want both backends", a, err1, b, err2)
	}

	// Full: a third request waits for a release.
	got := make(chan *Backend, 1)
	start := time.Now()
	go func() {
		x, _ := p.Acquire(ctx, 0)
		got <- x
	}()
	time.Sleep(30 * time.Millisecond)
	a.Release()
	if x := <-got; x != a {
		t.Fatalf("queued acquire got %v, want the released backend", x)
	} else if waited := time.Since(start); waited < 30*time.Millisecond || waited > queue {
		t.Errorf("queued acquire returned after %v, want after the release and before queue_timeout", waited)
	}

	// Still full: wait the queue timeout, then give up.
	start = time.Now()
	if _, err := p.Acquire(ctx, 0); !errors.Is(err, ErrQueueTimeout) {
		t.Errorf("acquire on a full pool: %v, want ErrQueueTimeout", err)
	} else if waited := time.Since(start); waited < queue {
		t.Errorf("gave up after %v, before queue_timeout %v", waited, queue)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := p.Acquire(cctx, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("acquire with a cancelled context: %v, want context.Canceled", err)
	}
	// A full backend that is also tried is no reason to wait.
	if _, err := p.Acquire(ctx, Tried(0).Add(a).Add(b)); !errors.Is(err, ErrNoBackend) {
		t.Errorf("acquire with every backend tried: %v, want ErrNoBackend", err)
	}
	noQueue := poolWith(t, 1, Options{MaxConns: 1})
	x, _ := noQueue.Acquire(ctx, 0)
	if _, err := noQueue.Acquire(ctx, 0); !errors.Is(err, ErrQueueTimeout) || x == nil {
		t.Errorf("acquire on a full pool without queue: %v, want ErrQueueTimeout at once", err)
	}
}

func TestMaxConnsNeverExceededConcurrently(t *testing.T) {
	const limit = 2
	p := poolWith(t, 2, Options{MaxConns: limit, QueueTimeout: 5 * time.Second})
	var over atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 300 {
				b, err := p.Acquire(context.Background(), 0)
				if err != nil {
					t.Error(err)
					return
				}
				if b.InFlight() > limit {
					over.Add(1)
				}
				b.Release()
			}
		})
	}
	wg.Wait()
	if over.Load() > 0 {
		t.Errorf("%d acquisitions saw more than %d in flight", over.Load(), limit)
	}
}

func TestEWMAAvoidsSlowBackend(t *testing.T) {
	p := poolWith(t, 3, Options{Policy: EWMA})
	bs := p.Backends()
	for range 5 {
		bs[0].Report(Success, 5*time.Millisecond)
		bs[1].Report(Success, 5*time.Millisecond)
		bs[2].Report(Success, 55*time.Millisecond)
	}
	for range 100 {
		if p.Pick(0) == bs[2] {
			t.Fatal("picked the slow backend with nothing in flight, want a fast one")
		}
	}
	// Enough requests in flight on the fast ones make the slow one cheaper.
	if got := pickShare(p, bs[2], 200); got == 0 {
		t.Error("slow backend got no picks with 200 in flight, want some")
	}
	// The peak: one slow response counts at once; a fast backend that is
	// still fast on average does not hide it.
	bs[0].Report(Success, 100*time.Millisecond)
	if l := bs[0].State().Latency; l < 90*time.Millisecond {
		t.Errorf("latency after a 100ms response = %v, want the peak at once", l)
	}
	bs[1].Report(Failure, time.Millisecond)
	if l := bs[1].State().Latency; l < failurePenalty/2 {
		t.Errorf("latency after a failure = %v, want the %v penalty", l, failurePenalty)
	}
}

func TestRetryAfter(t *testing.T) {
	p := poolWith(t, 2, Options{Recovery: 3 * time.Second, Passive: Passive{MaxFails: 1, FailTimeout: 2 * time.Second, MaxEjectedPercent: 100}})
	if got := p.RetryAfter(); got != 3*time.Second {
		t.Errorf("without ejections: %v, want the active recovery 3s", got)
	}
	fail(p.Backends()[0], 1)
	if got := p.RetryAfter(); got > 2*time.Second || got < time.Second {
		t.Errorf("with a 2s ejection: %v, want its remaining time", got)
	}
	if got := poolWith(t, 1, Options{}).RetryAfter(); got != time.Second {
		t.Errorf("nothing known: %v, want 1s", got)
	}
}
