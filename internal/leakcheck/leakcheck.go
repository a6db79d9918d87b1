// Package leakcheck lets tests assert that what they built and tore down
// left no goroutine behind.
package leakcheck

import (
	"runtime"
	"testing"
	"time"
)

// Settle waits up to five seconds for the goroutine count to fall back to
// base, as connections close and goroutines return, and fails t with every
// goroutine's stack if it does not. what names the work done since base.
func Settle(t testing.TB, base int, what string) {
	t.Helper()
	var now int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if now = runtime.NumGoroutine(); now <= base {
			return
		}
	}
	buf := make([]byte, 1<<20)
	t.Errorf("%d goroutines after %s, %d before\n%s", now, what, base, buf[:runtime.Stack(buf, true)])
}
