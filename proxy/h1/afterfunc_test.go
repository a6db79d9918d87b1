package h1

import (
	"bufio"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A handler that calls context.AfterFunc(r.Context(), f) and never stops
// it (legal with net/http) must not bring the server down when the
// client pipelines its next request: the request's context is watched, so
// the connection takes a new one rather than begin it again while the
// child's goroutine may still read its Err. The server runs in a child
// process, since the panic it would meet is on a goroutine nobody can
// recover.
func TestServerUnstoppedAfterFuncSurvivesPipelining(t *testing.T) {
	if os.Getenv("PORTICO_H1_AFTERFUNC_CHILD") == "1" {
		pipelineUnstoppedAfterFunc(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerUnstoppedAfterFuncSurvivesPipelining$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PORTICO_H1_AFTERFUNC_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		first, _, _ := strings.Cut(string(out), "\n\ngoroutine")
		t.Fatalf("the server process died: %v\n%s", err, first)
	}
}

func pipelineUnstoppedAfterFunc(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(&http.Server{
		ErrorLog: log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			context.AfterFunc(r.Context(), func() {}) // e.g. release something when the request ends
			_, _ = io.WriteString(w, "ok")
		}),
	})
	go func() { _ = s.Serve(ln) }()
	defer s.Close()
	const n = 2000
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	go func() {
		_, _ = io.WriteString(nc, strings.Repeat("GET / HTTP/1.1\r\nHost: x\r\n\r\n", n))
	}()
	br := bufio.NewReader(nc)
	_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	for i := 0; i < n; i++ {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	time.Sleep(100 * time.Millisecond)
}
