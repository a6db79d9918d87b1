package main

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portico/portico/config"
	"github.com/portico/portico/internal/testredis"
)

// balanceL4 listens on port and hands each connection to the next of
// targets that accepts it, as an L4 balancer in front of a cluster does:
// the CA's challenges reach any instance, not the one that ordered.
func balanceL4(t *testing.T, port int, targets func() []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var next atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				ts := targets()
				start := int(next.Add(1))
				for i := range ts {
					b, err := net.DialTimeout("tcp", ts[(start+i)%len(ts)], time.Second)
					if err != nil {
						continue // that instance is gone: the next one
					}
					defer b.Close()
					go func() { _, _ = io.Copy(b, c) }()
					_, _ = io.Copy(c, b)
					return
				}
			}()
		}
	}()
}

// acmeClusterConfig is one instance of a cluster that keeps its ACME state
// in the Redis at redisURL, for hosts.
func acmeClusterConfig(t *testing.T, p *pebble, httpPort, httpsPort int, redisURL, lockTTL string, hosts ...string) string {
	t.Helper()
	src := fmt.Sprintf(`
[server]
http_addr = "127.0.0.1:%d"
https_addr = "127.0.0.1:%d"
admin_addr = "off"
shutdown_timeout = "2s"
[log]
access_log = "off"
[cluster]
redis_url = %q
lock_ttl = %q
[tls.acme]
enabled = true
email = "ops@portico.test"
directory = %q
ca_root = %q
storage = "redis"
[pools.app]
backends = [{ url = %q }]
`, httpPort, httpsPort, redisURL, lockTTL, p.directory, p.caRoot, hostBackend(t))
	for _, h := range hosts {
		src += fmt.Sprintf("[[routes]]\nhost = %q\npool = \"app\"\n", h)
	}
	return src
}

// served returns the certificate the instance at addr serves for host, once
// it serves one (the order may still run).
func served(t *testing.T, addr, host string, p *pebble) *x509.Certificate {
	t.Helper()
	var leaf *x509.Certificate
	waitUntilFor(t, 60*time.Second, "a certificate for "+host+" at "+addr, func() bool {
		res, _, err := httpsGet(addr, host, p.roots)
		if err != nil {
			return false
		}
		leaf = res.TLS.PeerCertificates[0]
		return true
	})
	return leaf
}

func certFingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:8])
}

// Three instances with storage = "redis" against Pebble: one order per
// name for the cluster, the same certificate on all three, and when the
// certificates fall due, one renewal per name, which all three then serve.
func TestClusterACMEOneOrderPerNameSameCertificateOneRenewal(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a renewal")
	}
	rs := testredis.Start(t)
	ports := loopbackPorts(t, 8)
	vaHTTP, vaTLS := ports[0], ports[1]
	// Certificates live 15 s, so autocert renews them after about 10 s, on
	// every instance at once, give or take its 10% jitter.
	p := startPebbleWith(t, vaHTTP, vaTLS, 15*time.Second, nil)
	hosts := []string{"one.cluster.test", "two.cluster.test"}
	var httpAddrs, httpsAddrs []string
	for i := range 3 {
		httpAddrs = append(httpAddrs, "127.0.0.1:"+strconv.Itoa(ports[2+2*i]))
		httpsAddrs = append(httpsAddrs, "127.0.0.1:"+strconv.Itoa(ports[3+2*i]))
	}
	balanceL4(t, vaHTTP, func() []string { return httpAddrs })
	balanceL4(t, vaTLS, func() []string { return httpsAddrs })
	for i := range 3 {
		src := acmeClusterConfig(t, p, ports[2+2*i], ports[3+2*i], rs.URL(), "10s", hosts...)
		cfg, err := config.Parse([]byte(src), fmt.Sprintf("acme%d.toml", i))
		if err != nil {
			t.Fatalf("config: %v\n%s", err, src)
		}
		startServe(t, cfg)
	}

	first := map[string]*x509.Certificate{}
	for _, h := range hosts {
		for i, addr := range httpsAddrs {
			leaf := served(t, addr, h, p)
			if i == 0 {
				first[h] = leaf
			} else if certFingerprint(leaf) != certFingerprint(first[h]) {
				t.Errorf("%s: instance %d serves %s, instance 0 %s", h, i, certFingerprint(leaf), certFingerprint(first[h]))
			}
		}
		if n := p.ordersFor(h); n != 1 {
			t.Errorf("%s: %d orders at Pebble, want 1 for the cluster", h, n)
		}
	}
	if t.Failed() {
		return
	}

	// Renewal: each instance's timer fires; one orders, the others adopt.
	for _, h := range hosts {
		for i, addr := range httpsAddrs {
			var leaf *x509.Certificate
			waitUntilFor(t, 30*time.Second, fmt.Sprintf("instance %d serving a renewed %s", i, h), func() bool {
				res, _, err := httpsGet(addr, h, p.roots)
				if err == nil {
					leaf = res.TLS.PeerCertificates[0]
				}
				return leaf != nil && certFingerprint(leaf) != certFingerprint(first[h])
			})
			if n := p.ordersFor(h); n != 2 {
				t.Errorf("%s: %d orders at Pebble once renewed, want 2 (one renewal for the cluster)", h, n)
			}
		}
	}

	// Every order came from the cluster's one account, whose key is in Redis.
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	keyPEM, err := rdb.Get(context.Background(), "portico:acme:acme_account+key").Bytes()
	if err != nil {
		t.Fatalf("account key in redis: %v", err)
	}
	block, _ := pem.Decode(keyPEM)
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	acct, err := p.store.GetAccountByKey(key.Public())
	if err != nil || acct == nil {
		t.Fatalf("no account at Pebble for the stored key: %v", err)
	}
	if n := len(p.store.GetOrdersByAccountID(acct.ID)); n != 4 {
		t.Errorf("the stored account made %d orders, want all 4", n)
	}
}
