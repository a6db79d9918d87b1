package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portico/portico/internal/testredis"
)

// The instance holding a name's lock is killed in the middle of its order:
// its lock expires, another instance takes it, orders, and every survivor
// serves that certificate. The dead instance's order never completes.
func TestClusterACMELockHolderKilledMidOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three processes")
	}
	rs := testredis.Start(t)
	const host = "crash.cluster.test"
	ports := loopbackPorts(t, 8)
	held := make(chan struct{})
	var seen atomic.Bool
	p := startPebbleWith(t, ports[0], ports[1], 0, func(r *http.Request, name string) bool {
		if name != host || !seen.CompareAndSwap(false, true) {
			return true
		}
		close(held)
		<-r.Context().Done() // until the process that asked is dead
		return false
	})
	var httpAddrs, httpsAddrs []string
	for i := range 3 {
		httpAddrs = append(httpAddrs, "127.0.0.1:"+strconv.Itoa(ports[2+2*i]))
		httpsAddrs = append(httpsAddrs, "127.0.0.1:"+strconv.Itoa(ports[3+2*i]))
	}
	balanceL4(t, ports[0], func() []string { return httpAddrs })
	balanceL4(t, ports[1], func() []string { return httpsAddrs })

	dir := t.TempDir()
	procs := map[int]string{} // pid -> https address
	for i := range 3 {
		file := filepath.Join(dir, fmt.Sprintf("instance%d.toml", i))
		src := acmeClusterConfig(t, p, ports[2+2*i], ports[3+2*i], rs.URL(), "2s", host)
		if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		proc := startProcess(t, nil, "run", "-config", file)
		procs[proc.cmd.Process.Pid] = httpsAddrs[i]
	}

	select {
	case <-held:
	case <-time.After(60 * time.Second):
		t.Fatal("no instance ordered")
	}
	// The lock's token names its holder: host/pid/random.
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	token, err := rdb.Get(context.Background(), "portico:lock:acme:"+host).Result()
	if err != nil {
		t.Fatalf("reading the lock: %v", err)
	}
	parts := strings.Split(token, "/")
	pid, _ := strconv.Atoi(parts[len(parts)-2])
	if _, ok := procs[pid]; !ok {
		t.Fatalf("lock token %q names no instance", token)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var fps []string
	for other, addr := range procs {
		if other != pid {
			fps = append(fps, certFingerprint(served(t, addr, host, p)))
		}
	}
	t.Logf("certificate served by the survivors %v after the kill", time.Since(killed).Round(100*time.Millisecond))
	if len(fps) != 2 || fps[0] != fps[1] {
		t.Errorf("survivors serve %v, want one certificate", fps)
	}
	if n := p.ordersFor(host); n != 1 {
		t.Errorf("%d orders reached Pebble, want 1: the dead holder's never did", n)
	}
	if n := p.orders.Load(); n != 2 {
		t.Errorf("%d orders sent, want 2: the dead holder's and its successor's", n)
	}
}
