package balancer

import (
	"fmt"
	"testing"
	"time"
)

// Every change of state lands in the pool's history with its reason: the
// probe detail for active checks, the failure count for ejections.
func TestTransitionsAreRecordedWithReasons(t *testing.T) {
	p := poolWith(t, 2, Options{Passive: Passive{MaxFails: 2, FailTimeout: time.Minute, MaxEjectedPercent: 50}})
	a, b := p.Backends()[0], p.Backends()[1]

	a.RecordCheck(Check{OK: false, Detail: "connection refused"})
	a.SetUsable(false)
	a.SetUsable(false) // no change, no entry
	a.RecordCheck(Check{OK: true, Detail: "status 200"})
	a.SetUsable(true)
	b.Report(ServerError, time.Millisecond) // not a failure without fail_on_5xx
	fail(b, 2)
	b.Readmit("2 active checks passed")

	got := p.State().Transitions
	want := []string{
		a.URL().Host + " up>down connection refused",
		a.URL().Host + " down>up status 200",
		b.URL().Host + " usable>ejected 2 consecutive failures",
		b.URL().Host + " ejected>usable 2 active checks passed",
	}
	if len(got) != len(want) {
		t.Fatalf("transitions = %+v, want %d", got, len(want))
	}
	for i, tr := range got {
		if s := fmt.Sprintf("%s %s>%s %s", tr.Backend, tr.From, tr.To, tr.Reason); s != want[i] || tr.Time.IsZero() {
			t.Errorf("transition %d = %q at %v, want %q", i, s, tr.Time, want[i])
		}
	}
	if s := b.State(); s.Ejections != 1 || s.Ejected5xx != 0 {
		t.Errorf("ejections = %d (5xx %d), want 1 by errors", s.Ejections, s.Ejected5xx)
	}
	if s := a.State(); s.ProbesOK != 1 || s.ProbesFail != 1 {
		t.Errorf("probes = %d ok, %d failed; want 1 and 1", s.ProbesOK, s.ProbesFail)
	}
}

func TestEjectionByServerErrorsIsCountedAsSuch(t *testing.T) {
	p := poolWith(t, 2, Options{Passive: Passive{MaxFails: 2, FailTimeout: time.Minute, MaxEjectedPercent: 50, FailOn5xx: true}})
	b := p.Backends()[0]
	b.Report(Failure, time.Millisecond)
	b.Report(ServerError, time.Millisecond)
	if s := b.State(); s.Ejections != 1 || s.Ejected5xx != 1 {
		t.Errorf("ejections = %d (5xx %d), want 1 tipped by a 5xx", s.Ejections, s.Ejected5xx)
	}
}

// The history keeps the latest transitions only.
func TestTransitionsAreBounded(t *testing.T) {
	p := poolWith(t, 1, Options{})
	b := p.Backends()[0]
	for i := range historySize + 5 {
		b.RecordCheck(Check{Detail: fmt.Sprint(i)})
		b.SetUsable(i%2 == 1)
	}
	got := p.State().Transitions
	if len(got) != historySize || got[0].Reason != "5" || got[historySize-1].Reason != fmt.Sprint(historySize+4) {
		t.Errorf("kept %d transitions, from %q to %q; want the latest %d", len(got), got[0].Reason, got[len(got)-1].Reason, historySize)
	}
}
