package reqinfo

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Context is a request's context with its record, made once per
// connection and reused by each request the connection carries in turn:
// Begin starts a request, Cancel ends it. It spares a request the
// allocations of a cancelCtx, of a context for the record and of the
// http.Request that WithContext copies (the request can be reused too),
// which were most of the garbage a small proxied request left, and so
// most of the collector's work.
//
// It is cancelled as context.WithCancel's are: Done is closed and the
// functions registered with AfterFunc (which context.WithCancel and
// context.AfterFunc use for its children) run. A request's context must
// not be used once its handler has returned, as its request must not:
// the next request's would be seen. Stop functions from AfterFunc know
// which request they belong to and do nothing for a later one.
type Context struct {
	cancelled atomic.Bool
	mu        sync.Mutex
	seq       uint64        // the request's number on the connection
	done      chan struct{} // made by the first Done, closed by Cancel
	afters    []afterFunc   // registered for this request, not stopped
	nextID    uint64
	info      Info
}

type afterFunc struct {
	id uint64
	f  func()
}

// Begin starts a request on c: not cancelled, nothing registered, an empty
// record, which it returns. The previous request must have been cancelled.
func (c *Context) Begin() *Info {
	c.mu.Lock()
	c.seq++
	c.done = nil
	clear(c.afters)
	c.afters = c.afters[:0]
	c.cancelled.Store(false)
	c.mu.Unlock()
	c.info = Info{}
	return &c.info
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
	if c.cancelled.Load() {
		go f()
		return func() bool { return false }
	}
	c.nextID++
	id, seq := c.nextID, c.seq
	c.afters = append(c.afters, afterFunc{id, f})
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.seq != seq || c.cancelled.Load() {
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
