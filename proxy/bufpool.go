package proxy

import "sync"

// bufPool is a typed sync.Pool of fixed-size arrays: pointers to arrays go
// in and out without the allocation that putting a slice in a Pool costs.
type bufPool[T any] struct{ p sync.Pool }

func newBufPool[T any]() *bufPool[T] {
	return &bufPool[T]{p: sync.Pool{New: func() any { return new(T) }}}
}

func (p *bufPool[T]) get() *T  { return p.p.Get().(*T) }
func (p *bufPool[T]) put(b *T) { p.p.Put(b) }

// copyBuffers are the 32 KiB buffers bodies are copied through.
var copyBuffers = newBufPool[[32 << 10]byte]()
