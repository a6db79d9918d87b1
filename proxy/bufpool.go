package proxy

import (
	"sync"
	"sync/atomic"
)

// bufPool is a typed sync.Pool, of fixed-size arrays mostly: pointers to
// arrays go in and out without the allocation that putting a slice in a
// Pool costs.
type bufPool[T any] struct{ p sync.Pool }

func newBufPool[T any]() *bufPool[T] {
	return &bufPool[T]{p: sync.Pool{New: func() any { return new(T) }}}
}

func (p *bufPool[T]) get() *T  { return p.p.Get().(*T) }
func (p *bufPool[T]) put(b *T) { p.p.Put(b) }

// copyBuffers are the 32 KiB buffers bodies are copied through.
var copyBuffers = newBufPool[[32 << 10]byte]()

// A response body that fills a 32 KiB buffer in one read moves to a 256
// KiB one: a large download then costs an eighth of the reads and writes
// (1 MiB bodies on loopback went from 1.8 to 2.1 GB/s on one core). At
// most maxLargeBuffers are in use at once, so that many slow clients of
// large files hold 32 KiB each, as before, and not 256.
const maxLargeBuffers = 64

var (
	largeBuffers = newBufPool[[256 << 10]byte]()
	largeInUse   atomic.Int32
)

// copyBuf is the buffer one body is copied through: 32 KiB, then 256 KiB
// once a read has filled it, when one is free.
type copyBuf struct {
	small *[32 << 10]byte
	large *[256 << 10]byte
}

// next returns the buffer for the next read; full reports that the last
// read filled the buffer it was given. The slice it returned before is not
// to be used again.
func (b *copyBuf) next(full bool) []byte {
	if b.large != nil {
		return b.large[:]
	}
	if full && largeInUse.Add(1) <= maxLargeBuffers {
		b.large = largeBuffers.get()
		b.releaseSmall()
		return b.large[:]
	} else if full {
		largeInUse.Add(-1)
	}
	if b.small == nil {
		b.small = copyBuffers.get()
	}
	return b.small[:]
}

func (b *copyBuf) releaseSmall() {
	if b.small != nil {
		copyBuffers.put(b.small)
		b.small = nil
	}
}

// release returns the buffers to their pools.
func (b *copyBuf) release() {
	b.releaseSmall()
	if b.large != nil {
		largeBuffers.put(b.large)
		b.large = nil
		largeInUse.Add(-1)
	}
}
