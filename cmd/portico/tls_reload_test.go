package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/portico/portico/internal/testcert"
)

// A reload loads replaced and added static certificates, orders a
// certificate for a new ACME host (and none for the host it keeps), and
// stops serving a removed name; the HTTPS listener is not touched.
func TestReloadChangesCertificates(t *testing.T) {
	ports := loopbackPorts(t, 2)
	httpPort, httpsPort := ports[0], ports[1]
	p := startPebble(t, httpPort, httpsPort)
	static := testcert.NewCA(t)
	dir := t.TempDir()
	certS, keyS := static.Valid(t, "static.portico.test").WriteFiles(t, dir, "static")
	certG, keyG := static.Valid(t, "gone.portico.test").WriteFiles(t, dir, "gone")
	cacheDir := filepath.Join(dir, "acme")
	doc := func(hosts string, certs ...string) string {
		extra := "[tls]\nunknown_sni = \"reject\"\n"
		for i := 0; i < len(certs); i += 2 {
			extra += fmt.Sprintf("[[tls.certificates]]\ncert_file = %q\nkey_file = %q\n", certs[i], certs[i+1])
		}
		return acmeDoc(t, p, httpPort, httpsPort, cacheDir, extra, "hosts = "+hosts)
	}
	r := startRig(t, doc(`["alpn.portico.test"]`, certS, keyS, certG, keyG))
	addr := r.in.addrs().https

	res, _, err := httpsGet(addr, "alpn.portico.test", p.roots)
	if err != nil {
		t.Fatalf("ACME host before the reload: %v", err)
	}
	kept := res.TLS.PeerCertificates[0].SerialNumber
	serial := func(name string) string {
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, RootCAs: static.Pool()})
		if err != nil {
			return "refused"
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	if serial("gone.portico.test") == "refused" {
		t.Fatal("static certificate not served before the reload")
	}

	renewed := static.Valid(t, "static.portico.test")
	renewed.WriteFiles(t, dir, "static") // renewed in place
	orders := p.orders.Load()
	res2 := r.reload(doc(`["alpn.portico.test", "http01.portico.test"]`, certS, keyS))
	t.Logf("reload: %d changes", len(res2.Changes))

	var issued bool
	for deadline := time.Now().Add(60 * time.Second); !issued && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		_, body, err := httpsGet(addr, "http01.portico.test", p.roots)
		issued = err == nil && body == "backend saw http01.portico.test https"
	}
	if !issued {
		t.Fatal("no certificate for the ACME host added by the reload")
	}
	if n := p.orders.Load() - orders; n != 1 {
		t.Errorf("%d orders after the reload, want 1 (the new host's)", n)
	}
	if res, _, err := httpsGet(addr, "alpn.portico.test", p.roots); err != nil || res.TLS.PeerCertificates[0].SerialNumber.Cmp(kept) != 0 {
		t.Errorf("kept ACME host: %v; want the certificate it had", err)
	}
	if got := serial("static.portico.test"); got != renewed.TLS.Leaf.SerialNumber.String() {
		t.Errorf("static certificate renewed in place: served %s, want the new one", got)
	}
	if got := serial("gone.portico.test"); got != "refused" {
		t.Errorf("removed certificate still served (%s)", got)
	}
}

// A reload that adds [cluster] and moves ACME to storage = "redis" puts
// both in force: the certificates' store is the Redis the same reload
// connected to. (It used to be refused with "tls.acme.storage = "redis"
// needs [cluster]", [cluster] and all.) Neither the CA nor Redis need
// answer for that: orders and Redis calls are retried in the background.
func TestReloadAddsClusterStorage(t *testing.T) {
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	// storage = "dir" with its cache_dir, or "redis" with [cluster].
	doc := func(storage string) string {
		return fmt.Sprintf(`[server]
http_addr = "127.0.0.1:0"
https_addr = "127.0.0.1:0"
admin_addr = "off"
shutdown_timeout = "2s"
[log]
access_log = "off"
[tls.acme]
enabled = true
email = "ops@portico.test"
directory = "https://%s/directory"
%s
[pools.app]
backends = [{ url = "http://%s" }]
[[routes]]
host = "app.portico.test"
pool = "app"
`, closed(), storage, closed())
	}
	// Not t.TempDir: the ACME manager of the first configuration may still
	// be writing its lock files into the directory as the test ends.
	dir, err := os.MkdirTemp("", "portico-acme-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; i < 50 && os.RemoveAll(dir) != nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
	})
	r := startRig(t, doc(fmt.Sprintf("storage = \"dir\"\ncache_dir = %q", dir)))
	r.reload(doc(fmt.Sprintf("storage = \"redis\"\n[cluster]\nredis_url = \"redis://%s/0\"", closed())))
	if got := r.in.running.Load().TLS.ACME.Storage; got != "redis" {
		t.Errorf("storage %q in force after the reload, want redis", got)
	}
}
