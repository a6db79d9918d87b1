package cluster

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/acme/autocert"
)

var _ autocert.Cache = (*Store)(nil)

func TestStoreIsAnAutocertCache(t *testing.T) {
	f := newFixture(t)
	s, ctx := f.c.Store(), context.Background()
	if _, err := s.Get(ctx, "app.example.com"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("Get of nothing = %v, want autocert.ErrCacheMiss", err)
	}
	if err := s.Put(ctx, "app.example.com", []byte("pem")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, "app.example.com"); err != nil || string(got) != "pem" {
		t.Errorf("Get = %q, %v", got, err)
	}
	if v := f.rdb.Get(ctx, "portico:acme:app.example.com").Val(); v != "pem" {
		t.Errorf("stored under portico:acme:app.example.com: %q", v)
	}
	if ok, err := s.PutIfAbsent(ctx, "app.example.com", []byte("other")); ok || err != nil {
		t.Errorf("PutIfAbsent over a value = %v, %v; want false", ok, err)
	}
	if ok, err := s.PutIfAbsent(ctx, "acme_account+key", []byte("key")); !ok || err != nil {
		t.Errorf("PutIfAbsent of a new name = %v, %v; want true", ok, err)
	}
	if err := s.Delete(ctx, "app.example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "app.example.com"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Errorf("Get after Delete = %v", err)
	}
}

func TestLockIsExclusiveKeptAliveAndExpiresWhenItsHolderDies(t *testing.T) {
	f := newFixture(t, `lock_ttl = "1s"`)
	s, ctx := f.c.Store(), context.Background()
	release, ok, err := s.TryLock(ctx, "app.example.com")
	if !ok || err != nil {
		t.Fatalf("TryLock of a free lock = %v, %v", ok, err)
	}
	// The token says who holds it.
	token := f.rdb.Get(ctx, "portico:lock:acme:app.example.com").Val()
	if !strings.Contains(token, "/"+strconv.Itoa(os.Getpid())+"/") {
		t.Errorf("token %q does not name this process", token)
	}
	// Held well past its TTL: the holder renews it.
	for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if _, ok, _ := s.TryLock(ctx, "app.example.com"); ok {
			t.Fatal("a held lock was taken")
		}
	}
	release()
	release() // a second release does nothing
	l, err := s.tryLock(ctx, "app.example.com")
	if l == nil || err != nil {
		t.Fatalf("TryLock after release = %v, %v", l, err)
	}

	// The holder dies: it stops renewing, and never releases. What is left
	// of the lock is at most lock_ttl, by Redis's own clock (a wall-clock
	// bound on the takeover below would measure how busy the machine is).
	close(l.done)
	l.wg.Wait()
	if left := f.rdb.PTTL(ctx, "portico:lock:acme:app.example.com").Val(); left <= 0 || left > time.Second {
		t.Errorf("a dead holder's lock expires in %v, want within lock_ttl (1s)", left)
	}
	start := time.Now()
	for {
		if _, ok, _ := s.TryLock(ctx, "app.example.com"); ok {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("a dead holder's lock did not expire")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
