package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// max_conns_per_ip holds on the client listener, and only there: the admin
// listener still answers the same client. A refused connection is never
// counted as one served. A reload changes the cap for new connections and
// counts the ones open.
func TestConnectionCapsPerClient(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer backend.Close()
	doc := func(perIP int) string {
		return fmt.Sprintf(`
[server]
http_addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"
max_conns_per_ip = %d
[pools.app]
backends = [{ url = %q }]
[[routes]]
pool = "app"
`, perIP, backend.URL)
	}
	r := startRig(t, doc(1))
	addrs := r.in.addrs()

	served := func(addr, path string) bool {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: h.test\r\n\r\n", path)
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		return err == nil && res.StatusCode == http.StatusOK
	}
	if !served(addrs.http, "/") {
		t.Fatal("first connection not served")
	}
	if served(addrs.http, "/") {
		t.Error("second connection from the same client served past max_conns_per_ip = 1")
	}
	if !served(addrs.admin, "/healthz") {
		t.Error("the admin listener refused a connection: the cap is for client listeners only")
	}
	if n := sample(scrape(t, addrs.admin), "portico_connections_total", "listener", "http"); n != 1 {
		t.Errorf("portico_connections_total{listener=http} = %v, want 1: the served connection, not the refused one", n)
	}
	if n := sample(scrape(t, addrs.admin), "portico_connections_refused_total", "reason", "max_conns_per_ip"); n != 1 {
		t.Errorf("portico_connections_refused_total{reason=max_conns_per_ip} = %v, want 1", n)
	}

	r.reload(doc(0))
	if !served(addrs.http, "/") {
		t.Error("a connection refused after a reload lifted the cap")
	}
	r.reload(doc(2)) // two are open
	if served(addrs.http, "/") {
		t.Error("a connection served past a cap a reload lowered below the connections open")
	}
}
