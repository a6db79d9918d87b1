package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/acme/autocert"
)

// Store keeps ACME state in Redis under key_prefix + "acme:": the account
// key, certificates with their private keys, and challenge tokens while an
// order runs, so that whichever instance the CA reaches can answer it. It
// implements autocert.Cache, plus what ordering once per cluster needs:
// PutIfAbsent and TryLock. Private keys are in Redis: protect it as you
// would the certificate directory (a password, TLS, a private network).
type Store struct{ c *Client }

// Store returns the client's ACME store.
func (c *Client) Store() *Store { return &Store{c: c} }

func (s *Store) key(name string) string { return s.c.prefix + "acme:" + name }

// call runs one storage call with its own deadline, counting a failure.
func (s *Store) call(ctx context.Context, op string, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, storageTimeout)
	defer cancel()
	err := f(ctx)
	if err != nil && !errors.Is(err, redis.Nil) {
		s.c.failed(op, err)
	}
	return err
}

// Get implements autocert.Cache.
func (s *Store) Get(ctx context.Context, name string) ([]byte, error) {
	var data []byte
	err := s.call(ctx, OpStorage, func(ctx context.Context) (err error) {
		data, err = s.c.rdb.Get(ctx, s.key(name)).Bytes()
		return err
	})
	if errors.Is(err, redis.Nil) {
		return nil, autocert.ErrCacheMiss
	}
	return data, err
}

// Put implements autocert.Cache.
func (s *Store) Put(ctx context.Context, name string, data []byte) error {
	return s.call(ctx, OpStorage, func(ctx context.Context) error {
		return s.c.rdb.Set(ctx, s.key(name), data, 0).Err()
	})
}

// Delete implements autocert.Cache.
func (s *Store) Delete(ctx context.Context, name string) error {
	return s.call(ctx, OpStorage, func(ctx context.Context) error {
		return s.c.rdb.Del(ctx, s.key(name)).Err()
	})
}

// PutIfAbsent stores data under name unless something is stored there
// already, and reports whether it stored it.
func (s *Store) PutIfAbsent(ctx context.Context, name string, data []byte) (bool, error) {
	var stored bool
	err := s.call(ctx, OpStorage, func(ctx context.Context) (err error) {
		stored, err = s.c.rdb.SetNX(ctx, s.key(name), data, 0).Result()
		return err
	})
	return stored, err
}

// Lock scripts: a lock is only extended or deleted by the holder of its
// token, so a holder that stalled past the expiry cannot free the lock
// another instance has taken since.
var (
	extendScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`)
	releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)
)

// TryLock takes the lock of name (under key_prefix + "lock:acme:") if it
// is free. The holder's token names this process (host/pid) and the lock
// expires after lock_ttl unless renewed: this process renews it every
// third of lock_ttl until release is called, so a holder that crashes
// frees it within lock_ttl, and one that is cut off from Redis stops
// renewing and logs that it lost it.
func (s *Store) TryLock(ctx context.Context, name string) (release func(), ok bool, err error) {
	l, err := s.tryLock(ctx, name)
	if l == nil {
		return nil, false, err
	}
	return l.release, true, nil
}

func (s *Store) tryLock(ctx context.Context, name string) (*lock, error) {
	l := &lock{s: s, key: s.c.prefix + "lock:acme:" + name, token: s.c.token(), done: make(chan struct{})}
	var ok bool
	err := s.call(ctx, OpLock, func(ctx context.Context) (err error) {
		ok, err = s.c.rdb.SetNX(ctx, l.key, l.token, s.c.lockTTL).Result()
		return err
	})
	if err != nil || !ok {
		return nil, err
	}
	l.wg.Add(1)
	go l.keepAlive()
	return l, nil
}

type lock struct {
	s          *Store
	key, token string
	done       chan struct{}
	wg         sync.WaitGroup
	once       sync.Once
}

func (l *lock) keepAlive() {
	defer l.wg.Done()
	ttl := l.s.c.lockTTL
	tick := time.NewTicker(ttl / 3)
	defer tick.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-tick.C:
		}
		var kept int64
		err := l.s.call(context.Background(), OpLock, func(ctx context.Context) (err error) {
			kept, err = extendScript.Run(ctx, l.s.c.rdb, []string{l.key}, l.token, ttl.Milliseconds()).Int64()
			return err
		})
		if err == nil && kept == 0 {
			l.s.c.log.Warn("certificate lock lost: it expired while held; another instance may order too", "lock", l.key)
			return
		}
	}
}

// release stops renewing the lock and deletes it if it is still ours.
func (l *lock) release() {
	l.once.Do(func() {
		close(l.done)
		l.wg.Wait()
		_ = l.s.call(context.Background(), OpLock, func(ctx context.Context) error {
			return releaseScript.Run(ctx, l.s.c.rdb, []string{l.key}, l.token).Err()
		})
	})
}
