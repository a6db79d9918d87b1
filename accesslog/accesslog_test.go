package accesslog

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/portico/portico/internal/testlog"
	"github.com/portico/portico/reqinfo"
)

// sample is a finished request with every field set, the user agent and
// path holding characters that need escaping.
func sample() (*http.Request, *reqinfo.Info) {
	r := httptest.NewRequest("POST", "https://app.example/api/caf%C3%A9?token=secret", strings.NewReader("body"))
	r.Header.Set("User-Agent", "curl/8 \"quoted\"\n\x01")
	r.Header.Set("Referer", "https://ref.example/")
	r.TLS = &tls.ConnectionState{Version: tls.VersionTLS13}
	info := &reqinfo.Info{
		Start:       time.Date(2026, 11, 21, 10, 30, 0, 123e6, time.UTC),
		ClientIP:    netip.MustParseAddr("203.0.113.7"),
		Route:       "api",
		Pool:        "app",
		Backend:     "10.0.0.1:8080",
		Attempts:    2,
		BackendTTFB: 1500 * time.Microsecond,
		User:        "alice",
		RequestID:   "0192b6c0-0000-7000-8000-000000000001",
		Status:      201,
		BytesOut:    512,
		BytesIn:     4,
	}
	return r, info
}

func logOne(t *testing.T, format string, query bool) string {
	t.Helper()
	var out testlog.Buffer
	l := New(&out, format, query, nil)
	r, info := sample()
	l.Log(r, info)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestJSONLineHasEveryField(t *testing.T) {
	line := logOne(t, JSON, false)
	if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
		t.Fatalf("want one line, got %q", line)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, line)
	}
	want := map[string]any{
		"time": "2026-11-21T10:30:00.123Z", "client_ip": "203.0.113.7", "method": "POST", "host": "app.example",
		"path": "/api/caf%C3%A9", "proto": "HTTP/1.1", "tls": "TLS 1.3", "status": 201.0, "bytes_in": 4.0, "bytes_out": 512.0,
		"route": "api", "pool": "app", "backend": "10.0.0.1:8080", "backend_ttfb_ms": 1.5, "attempts": 2.0,
		"request_id": "0192b6c0-0000-7000-8000-000000000001", "user": "alice",
		"user_agent": "curl/8 \"quoted\"\n\x01", "referer": "https://ref.example/",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	if _, ok := got["duration_ms"].(float64); !ok {
		t.Errorf("duration_ms missing: %v", got["duration_ms"])
	}
	if len(got) != len(want)+1 {
		t.Errorf("%d fields, want %d: %s", len(got), len(want)+1, line)
	}
	if strings.Contains(line, "secret") {
		t.Error("query logged without access_log_query")
	}
}

func TestQueryOnlyWhenAsked(t *testing.T) {
	var got map[string]any
	_ = json.Unmarshal([]byte(logOne(t, JSON, true)), &got)
	if got["path"] != "/api/caf%C3%A9?token=secret" {
		t.Errorf("path = %q, want it with the query", got["path"])
	}
}

func TestInvalidUTF8StaysValidJSON(t *testing.T) {
	var out testlog.Buffer
	l := New(&out, JSON, false, nil)
	r, info := sample()
	r.Header.Set("User-Agent", "bad \xff\xfe bytes")
	l.Log(r, info)
	_ = l.Close()
	var got map[string]any
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil {
		t.Fatalf("not JSON: %v: %q", err, out.String())
	}
}

// The combined format, parsed with the usual regular expression for it.
var combinedRe = regexp.MustCompile(`^(\S+) \S+ (\S+) \[([^\]]+)\] "(\S+) (\S+) (\S+)" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)"$`)

func TestCombinedParsesWithStandardRegex(t *testing.T) {
	line := strings.TrimSuffix(logOne(t, Combined, false), "\n")
	m := combinedRe.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("does not parse: %q", line)
	}
	want := []string{"203.0.113.7", "alice", "21/Nov/2026:10:30:00 +0000", "POST", "/api/caf%C3%A9", "HTTP/1.1", "201", "512", "https://ref.example/", `curl/8 \x22quoted\x22\x0a\x01`}
	for i, w := range want {
		if m[i+1] != w {
			t.Errorf("field %d = %q, want %q", i+1, m[i+1], w)
		}
	}
	if _, err := time.Parse("02/Jan/2006:15:04:05 -0700", m[3]); err != nil {
		t.Errorf("time: %v", err)
	}
}

// blockingWriter never returns from Write until released, like a pipe
// nobody reads.
type blockingWriter struct{ release chan struct{} }

func (w blockingWriter) Write(p []byte) (int, error) { <-w.release; return len(p), nil }

func TestDropsAreCountedWhenTheWriterIsBlocked(t *testing.T) {
	w := blockingWriter{make(chan struct{})}
	l := New(w, JSON, false, nil)
	r, info := sample()
	lineLen := len(logOne(t, JSON, false))
	n := 3 * BufferSize / lineLen
	done := make(chan struct{})
	go func() {
		for range n {
			l.Log(r, info)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Log blocked behind a stuck writer")
	}
	// The writer is stuck with one batch (at most BufferSize), the pending
	// buffer holds BufferSize more; the rest is dropped.
	dropped := int(l.Dropped())
	if lo, hi := n-2*BufferSize/lineLen-2, n-BufferSize/lineLen; dropped < lo || dropped > hi {
		t.Errorf("Dropped() = %d of %d lines, want %d to %d", dropped, n, lo, hi)
	}
	close(w.release)
	_ = l.Close()
}

func TestReopenAfterRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	var logs testlog.Buffer
	l, err := Open(path, JSON, false, slogTo(&logs))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r, info := sample()
	l.Log(r, info)
	waitLines(t, path, 1)

	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Log(r, info)
	waitLines(t, path, 1)
	waitLines(t, path+".1", 1)

	// A reopen that fails keeps the old file and says so.
	if err := os.Rename(path, path+".2"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil { // the path is now a directory
		t.Fatal(err)
	}
	if err := l.Reopen(); err == nil {
		t.Fatal("Reopen onto a directory succeeded")
	}
	l.Log(r, info)
	waitLines(t, path+".2", 2)
	if !strings.Contains(logs.String(), "access log not reopened") {
		t.Errorf("failed reopen not logged: %s", logs.String())
	}
}

func waitLines(t *testing.T, path string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if got := strings.Count(string(b), "\n"); got == n {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("%s has %d lines, want %d", path, got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkLog is the request's share: formatting the line and appending
// it to the pending buffer (the writer goroutine only writes).
func BenchmarkLog(b *testing.B) {
	r, info := sample()
	r.URL.Path, r.URL.RawPath = "/api/users", "" // a path that needs no escaping
	for _, f := range []string{JSON, Combined} {
		b.Run(f, func(b *testing.B) {
			l := New(io.Discard, f, false, nil)
			defer l.Close()
			b.ReportAllocs()
			for b.Loop() {
				l.Log(r, info)
			}
		})
	}
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
