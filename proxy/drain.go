package proxy

import (
	"context"
	"time"
)

// retiring is a backend's transports that the snapshot replacing theirs no
// longer uses. removed says the backend left the configuration; otherwise
// only its transport settings changed and it lives on with new transports.
type retiring struct {
	t       *transports
	removed bool
}

// retiringFrom lists prev's transports that next does not use.
func retiringFrom(prev, next *Snapshot) []retiring {
	kept := map[*transports]bool{}
	present := map[string]bool{} // pool name + " " + backend URL in next
	for name, up := range next.upstreams {
		for i, b := range up.pool.Backends() {
			kept[up.conns[i]] = true
			present[name+" "+b.URL().String()] = true
		}
	}
	var out []retiring
	for name, up := range prev.upstreams {
		for i, b := range up.pool.Backends() {
			if t := up.conns[i]; !kept[t] {
				out = append(out, retiring{t: t, removed: !present[name+" "+b.URL().String()]})
			}
		}
	}
	return out
}

// drainTick is how often Drain closes what went idle.
const drainTick = 250 * time.Millisecond

// Drain retires what the snapshot replaced by s used and s does not; call
// it once s is in use. The middleware states s did not take over are
// released at once (requests still running on the old snapshot keep
// working). Requests still running on removed or reconfigured backends
// finish: their connections are closed as they go idle.
// When timeout has passed (or ctx ends), whatever a removed backend still
// has open, upgraded connections (WebSocket), event streams and long
// responses included, is cut. A backend that only got new transport
// settings is never cut: its last connections close when their requests end
// (at the latest, the transport's idle timeout closes them).
func (s *Snapshot) Drain(ctx context.Context, timeout time.Duration) {
	s.prevMiddlewares.Close()
	if len(s.retiring) == 0 {
		return
	}
	end := time.NewTimer(timeout)
	defer end.Stop()
	tick := time.NewTicker(drainTick)
	defer tick.Stop()
	for done := false; !done; {
		for _, r := range s.retiring {
			r.t.closeIdle()
		}
		select {
		case <-tick.C:
		case <-end.C:
			done = true
		case <-ctx.Done():
			done = true
		}
	}
	for _, r := range s.retiring {
		if r.removed {
			r.t.cut()
		} else {
			r.t.closeIdle()
		}
	}
}
