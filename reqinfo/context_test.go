package reqinfo

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestContextCancelsEachRequest(t *testing.T) {
	c := new(Context)
	for i := range 3 {
		info := c.Begin()
		if From(c) != info || info.Status != 0 {
			t.Fatalf("request %d: the record is not the context's, or not empty", i)
		}
		info.Status = 200
		if c.Err() != nil {
			t.Fatalf("request %d: cancelled before it ended", i)
		}
		c.Cancel()
		c.Cancel()
		if c.Err() != context.Canceled || context.Cause(c) != context.Canceled {
			t.Fatalf("request %d: Err %v, cause %v after Cancel", i, c.Err(), context.Cause(c))
		}
		if c.Watched() {
			t.Fatalf("request %d: watched, though nothing called Done or AfterFunc", i)
		}
	}
	c.Begin()
	early := c.Done() // asked for before the end, and after it
	if closed(early) || !c.Watched() {
		t.Fatal("Done: closed before Cancel, or the context not marked watched")
	}
	c.Cancel()
	if !closed(early) || !closed(c.Done()) {
		t.Fatal("Done not closed by Cancel")
	}
}

// Children are cancelled with the request, and watching it costs them no
// goroutine (the context package uses AfterFunc).
func TestContextChildrenNeedNoGoroutine(t *testing.T) {
	c := new(Context)
	c.Begin()
	before := runtime.NumGoroutine()
	var children []context.Context
	for range 50 {
		child, cancel := context.WithTimeout(c, time.Hour)
		defer cancel()
		children = append(children, child)
	}
	if n := runtime.NumGoroutine() - before; n > 5 {
		t.Errorf("50 children started %d goroutines", n)
	}
	stopped, stop := context.WithCancel(c)
	stop() // a child cancelled first unregisters itself
	ran := make(chan struct{})
	context.AfterFunc(c, func() { close(ran) })
	c.Cancel()
	for i, child := range children {
		select {
		case <-child.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("child %d not cancelled with the request", i)
		}
	}
	if stopped.Err() != context.Canceled {
		t.Errorf("the child cancelled first: %v", stopped.Err())
	}
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("AfterFunc's function did not run")
	}
}

// A stop function stops its function, once, and reports false once the
// context is cancelled; a function registered after is run at once.
func TestContextAfterFuncStop(t *testing.T) {
	c := new(Context)
	c.Begin()
	ran := make(chan string, 4)
	stopA := c.AfterFunc(func() { ran <- "a" })
	stopB := c.AfterFunc(func() { ran <- "b" })
	if !stopA() || stopA() {
		t.Fatal("stop: want true once, then false")
	}
	c.Cancel()
	if got := <-ran; got != "b" {
		t.Fatalf("ran %q, want b", got)
	}
	if stopB() {
		t.Fatal("stop after the function ran reported true")
	}
	late := make(chan struct{})
	c.AfterFunc(func() { close(late) })
	<-late
}

// A child that outlives its request (context.AfterFunc never stopped, as
// net/http allows) reads the parent's Err after Cancel, on a goroutine of
// its own: the context, being watched, must stay cancelled, so the server
// takes a new one for the next request. Were it begun again, the context
// package would panic ("missing cancel error") in that goroutine.
func TestContextWatchedStaysCancelled(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // Begin runs before the child's goroutine
	c := new(Context)
	c.Begin()
	child, stop := context.WithCancel(c)
	defer stop()
	context.AfterFunc(c, func() {})
	c.Cancel()
	if !c.Watched() {
		t.Fatal("a context with children is not marked watched")
	}
	next := new(Context) // what the server does
	next.Begin()
	<-child.Done()
	if c.Err() != context.Canceled {
		t.Fatal("the watched context is no longer cancelled")
	}
}

// Cancel from another goroutine (the client left) races with the handler's
// use of the context: run under -race.
func TestContextConcurrentCancel(t *testing.T) {
	for range 100 {
		c := new(Context)
		c.Begin()
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); c.Cancel() }()
		go func() {
			defer wg.Done()
			child, cancel := context.WithCancel(c)
			_ = c.Err()
			<-child.Done()
			cancel()
		}()
		wg.Wait()
		c.Cancel()
	}
}
