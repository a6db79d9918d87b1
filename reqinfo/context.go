package reqinfo

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Context is a request's context with its record, which a server may
// reuse for the connection's next request (Begin) once the request has
// ended (Cancel), unless someone watched it: it spares a request the
// allocations of a cancelCtx, of a context for the record and of the
// http.Request that WithContext copies (the request can be reused too),
// which were most of the garbage a small proxied request left, and so
// most of the collector's work.
//
// It is cancelled as context.WithCancel's are: Done is closed and the
// functions registered with AfterFunc (which context.WithCancel and
// context.AfterFunc use for its children) run. A context whose Done or
// AfterFunc was called is Watched: what watches it may look at Err after
// the request, and must see it cancelled for good, so a server takes a new
// Context for the next request instead (a context's Err, once set, never
// goes back to nil). Nothing else may use a request's context once its
// handler has returned, as nothing may use its request.
type Context struct {
	cancelled atomic.Bool
	mu        sync.Mutex
	watched   bool          // Done or AfterFunc was called
	done      chan struct{} // made by the first Done, closed by Cancel
	afters    []afterFunc   // registered for this request, not stopped
	nextID    uint64
	info      Info
}

type afterFunc struct {
	id uint64
	f  func()
}

// Begin starts a request on c, new or cancelled and not Watched: not
// cancelled, an empty record, which it returns.
func (c *Context) Begin() *Info {
	c.cancelled.Store(false)
	c.info = Info{}
	return &c.info
}

// Watched reports whether Done or AfterFunc was called on c: it is not to
// be reused then.
func (c *Context) Watched() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.watched
}

// Cancel ends the request: Done is closed, and what AfterFunc registered
// runs, each function on a goroutine of its own. Calls after the first do
// nothing.
func (c *Context) Cancel() {
	c.mu.Lock()
	if c.cancelled.Load() {
		c.mu.Unlock()
		return
	}
	c.cancelled.Store(true)
	if c.done != nil {
		close(c.done)
	}
	afters := c.afters
	c.afters = nil
	c.mu.Unlock()
	for _, a := range afters {
		go a.f()
	}
}

func (c *Context) Deadline() (time.Time, bool) { return time.Time{}, false }

func (c *Context) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watched = true
	if c.done == nil {
		c.done = make(chan struct{})
		if c.cancelled.Load() {
			close(c.done)
		}
	}
	return c.done
}

func (c *Context) Err() error {
	if c.cancelled.Load() {
		return context.Canceled
	}
	return nil
}

func (c *Context) Value(k any) any {
	if k == (key{}) {
		return &c.info
	}
	return nil
}

// AfterFunc is context.AfterFunc's for this context: the context package
// calls it for children (WithCancel, WithTimeout, AfterFunc), which then
// need no goroutine of their own to watch c.
func (c *Context) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watched = true
	if c.cancelled.Load() {
		go f()
		return func() bool { return false }
	}
	c.nextID++
	id := c.nextID
	c.afters = append(c.afters, afterFunc{id, f})
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.cancelled.Load() {
			return false
		}
		for i, a := range c.afters {
			if a.id == id {
				c.afters = slices.Delete(c.afters, i, i+1)
				return true
			}
		}
		return false
	}
}
