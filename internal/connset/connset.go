// Package connset owns a set of open connections that can be sealed: what a
// server or a transport keeps so that it can close, or wait for, everything
// it opened, and refuse what arrives once it is shutting down.
package connset

import "sync"

// Set is safe for concurrent use; its zero value is empty and open.
type Set[T comparable] struct {
	mu     sync.Mutex
	m      map[T]struct{}
	sealed bool
}

// Add puts c in the set and reports true, or reports false once the set is
// sealed.
func (s *Set[T]) Add(c T) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sealed {
		return false
	}
	if s.m == nil {
		s.m = make(map[T]struct{})
	}
	s.m[c] = struct{}{}
	return true
}

// Remove takes c out of the set.
func (s *Set[T]) Remove(c T) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
}

// Seal refuses every later Add; the members stay.
func (s *Set[T]) Seal() {
	s.mu.Lock()
	s.sealed = true
	s.mu.Unlock()
}

// Range calls f for each member, with the set locked (f must not call the
// set), and returns how many members there are.
func (s *Set[T]) Range(f func(T)) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.m {
		f(c)
	}
	return len(s.m)
}
