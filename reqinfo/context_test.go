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
	var c Context
	for i := range 3 {
		info := c.Begin()
		if From(&c) != info || info.Status != 0 {
			t.Fatalf("request %d: the record is not the context's, or not empty", i)
		}
		info.Status = 200
		early := c.Done() // asked for before the end, and after it
		if c.Err() != nil || closed(early) {
			t.Fatalf("request %d: cancelled before it ended", i)
		}
		c.Cancel()
		c.Cancel()
		if c.Err() != context.Canceled || !closed(early) || !closed(c.Done()) {
			t.Fatalf("request %d: Err %v, Done closed %v/%v after Cancel", i, c.Err(), closed(early), closed(c.Done()))
		}
		if context.Cause(&c) != context.Canceled {
			t.Fatalf("request %d: cause %v", i, context.Cause(&c))
		}
	}
}

// Children are cancelled with the request, and watching it costs them no
// goroutine (the context package uses AfterFunc).
func TestContextChildrenNeedNoGoroutine(t *testing.T) {
	var c Context
	c.Begin()
	before := runtime.NumGoroutine()
	var children []context.Context
	for range 50 {
		child, cancel := context.WithTimeout(&c, time.Hour)
		defer cancel()
		children = append(children, child)
	}
	if n := runtime.NumGoroutine() - before; n > 5 {
		t.Errorf("50 children started %d goroutines", n)
	}
	stopped, stop := context.WithCancel(&c)
	stop() // a child cancelled first unregisters itself
	ran := make(chan struct{})
	context.AfterFunc(&c, func() { close(ran) })
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

// A stop function stops its own request's function, once, and nothing of
// a later request's.
func TestContextAfterFuncStop(t *testing.T) {
	var c Context
	c.Begin()
	ran := make(chan string, 4)
	stopA := c.AfterFunc(func() { ran <- "a" })
	c.AfterFunc(func() { ran <- "b" })
	if !stopA() || stopA() {
		t.Fatal("stop: want true once, then false")
	}
	c.Cancel()
	if got := <-ran; got != "b" {
		t.Fatalf("ran %q, want b", got)
	}
	c.Begin()
	stopC := c.AfterFunc(func() { ran <- "c" })
	if stopA() {
		t.Fatal("an earlier request's stop stopped something")
	}
	c.Cancel()
	if got := <-ran; got != "c" {
		t.Fatalf("ran %q, want c", got)
	}
	if stopC() {
		t.Fatal("stop after the function ran reported true")
	}
	late := make(chan struct{})
	c.AfterFunc(func() { close(late) }) // registered once cancelled: runs at once
	<-late
}

// Cancel from another goroutine (the client left) races with the handler's
// use of the context: run under -race.
func TestContextConcurrentCancel(t *testing.T) {
	var c Context
	for range 100 {
		c.Begin()
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); c.Cancel() }()
		go func() {
			defer wg.Done()
			child, cancel := context.WithCancel(&c)
			_ = c.Err()
			<-child.Done()
			cancel()
		}()
		wg.Wait()
		c.Cancel()
	}
}
